//! The Step Functions calls several parts share: starting an execution under a name that makes
//! a retry find the same execution instead of starting a second (the pipeline worker, guard
//! mode), the running executions (retention), the states an execution entered (guard), and
//! the mapping of Step Functions failures to
//! `StepFunctionsError` (or `Throttled`).

use crate::aws::named_error;
use crate::error::Error;

/// An execution started by [`start_named`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub execution_arn: String,
    /// False when an execution of that name existed already: a retry, or a duplicate event.
    pub new: bool,
}

/// Starts execution `name` of `state_machine` with `input`. Step Functions keeps execution
/// names unique: the same name and input while it runs returns that execution, and any other
/// reuse is `ExecutionAlreadyExists`. Both mean it was started before, so neither starts a
/// second one. moto reports the first case as a new start.
pub async fn start_named(
    sfn: &aws_sdk_sfn::Client,
    state_machine: &str,
    name: &str,
    input: &str,
) -> Result<Started, Error> {
    crate::aws::permissions::check("states:StartExecution")?;
    let started = sfn
        .start_execution()
        .state_machine_arn(state_machine)
        .name(name)
        .input(input)
        .send()
        .await;
    match started {
        Ok(out) => Ok(Started {
            execution_arn: out.execution_arn().to_string(),
            new: true,
        }),
        Err(e)
            if aws_sdk_sfn::error::ProvideErrorMetadata::code(&e)
                == Some("ExecutionAlreadyExists") =>
        {
            Ok(Started {
                execution_arn: execution_arn(state_machine, name),
                new: false,
            })
        }
        Err(e) => Err(sfn_error(sfn, "StartExecution", e)),
    }
}

/// The ARN of execution `name` of `state_machine`.
pub fn execution_arn(state_machine: &str, name: &str) -> String {
    format!(
        "{}:{name}",
        state_machine.replacen(":stateMachine:", ":execution:", 1)
    )
}

/// The names of the running executions of a state machine: backup ids, or guard restores of
/// them.
pub async fn running_executions(
    sfn: &aws_sdk_sfn::Client,
    state_machine_arn: &str,
) -> Result<Vec<String>, Error> {
    crate::aws::permissions::check("states:ListExecutions")?;
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let page = sfn
            .list_executions()
            .state_machine_arn(state_machine_arn)
            .status_filter(aws_sdk_sfn::types::ExecutionStatus::Running)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| sfn_error(sfn, "ListExecutions", e))?;
        names.extend(page.executions().iter().map(|e| e.name().to_string()));
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(names);
        }
    }
}

/// What an execution's history says of it: the states it entered, in order, and its input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecutionTrail {
    pub entered: Vec<String>,
    pub input: Option<String>,
}

/// Every event of execution `execution_arn`'s history, oldest first, read a page of 1,000
/// events at a time.
pub async fn history(
    sfn: &aws_sdk_sfn::Client,
    execution_arn: &str,
) -> Result<Vec<aws_sdk_sfn::types::HistoryEvent>, Error> {
    crate::aws::permissions::check("states:GetExecutionHistory")?;
    let mut events = Vec::new();
    let mut token = None;
    loop {
        let page = sfn
            .get_execution_history()
            .execution_arn(execution_arn)
            .max_results(1000)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| sfn_error(sfn, "GetExecutionHistory", e))?;
        token = page.next_token().map(str::to_string);
        events.extend(page.events);
        if token.is_none() {
            return Ok(events);
        }
    }
}

/// The trail of execution `execution_arn`, from its history.
pub async fn execution_trail(
    sfn: &aws_sdk_sfn::Client,
    execution_arn: &str,
) -> Result<ExecutionTrail, Error> {
    let mut trail = ExecutionTrail::default();
    for e in history(sfn, execution_arn).await? {
        if let Some(d) = e.state_entered_event_details() {
            trail.entered.push(d.name().to_string());
        } else if let Some(d) = e.execution_started_event_details() {
            trail.input = d.input().map(str::to_string);
        }
    }
    Ok(trail)
}

/// `StepFunctionsError` naming the operation, with the service's code and message and the
/// SDK's error as the source; `Throttled` when the SDK's retries ran out on throttling.
pub fn sfn_error<E, R>(
    sfn: &aws_sdk_sfn::Client,
    operation: &'static str,
    err: aws_sdk_sfn::error::SdkError<E, R>,
) -> Error
where
    E: aws_sdk_sfn::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    named_error(
        err,
        "Step Functions",
        operation,
        sfn.config().retry_config(),
        |operation, code, reason, source| Error::StepFunctions {
            operation,
            code,
            reason,
            source,
        },
    )
}
