//! `backstop run`: starts one execution of the protect state machine with a run document and
//! follows its history, printing each state as it is entered and left with its duration.
//! Exits non-zero with the Fail state's error and cause when the execution fails. The same
//! against AWS (no endpoint set) and against `backstop-local`.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sfn::types::{ExecutionStatus, HistoryEvent, HistoryEventType};
use backstop_core::aws::load_config;
use backstop_core::aws::sfn::sfn_error;
use backstop_core::model::manifest::new_backup_id;
use backstop_core::model::run::RunDocument;
use backstop_core::Error;
use clap::Args;
use serde::Serialize;

use crate::render;

#[derive(Args)]
pub struct RunArgs {
    /// The run document (JSON file; - for stdin).
    #[arg(long)]
    input: String,
    /// The protect state machine.
    #[arg(long, env = "BACKSTOP_STATE_MACHINE_ARN")]
    state_machine_arn: String,
    /// The execution name, which is also the backup id (default: a new backup id).
    #[arg(long)]
    name: Option<String>,
}

pub async fn run(args: RunArgs, json: bool) -> Result<(), Error> {
    let input = if args.input == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Error::InvalidInput(format!("reading stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(&args.input)
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", args.input)))?
    };
    serde_json::from_str::<serde::de::IgnoredAny>(&input)
        .map_err(|e| Error::InvalidInput(format!("{}: not JSON: {e}", args.input)))?;
    // Checked here too, so a bad document fails before an execution starts.
    RunDocument::from_json(&input)?;
    let name = args
        .name
        .unwrap_or_else(|| new_backup_id(time::OffsetDateTime::now_utc()));
    let sfn = aws_sdk_sfn::Client::new(&load_config().await);
    let outcome = follow(&sfn, &args.state_machine_arn, &name, &input, !json).await?;
    if json {
        render::json(&outcome);
    } else {
        let total: f64 = outcome.states.iter().map(|(_, s)| s).sum::<f64>();
        println!(
            "{} {} ({} history events, {total:.1} s in states)",
            outcome.name, outcome.status, outcome.events
        );
    }
    if !outcome.succeeded() {
        return Err(Error::ExecutionFailed {
            name: outcome.name,
            status: outcome.status,
            error: outcome.error.unwrap_or_default(),
            cause: outcome.cause.unwrap_or_default(),
        });
    }
    Ok(())
}

/// How an execution ended.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub execution_arn: String,
    pub name: String,
    pub status: String,
    pub error: Option<String>,
    pub cause: Option<String>,
    pub output: Option<serde_json::Value>,
    /// Each state left, in order: (name, seconds).
    pub states: Vec<(String, f64)>,
    /// Every history event type seen (the state transitions, for benchmarks).
    pub events: usize,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        ExecutionStatus::from(self.status.as_str()) == ExecutionStatus::Succeeded
    }
}

/// Starts the execution named `name` and follows it to its end.
pub async fn follow(
    sfn: &aws_sdk_sfn::Client,
    state_machine_arn: &str,
    name: &str,
    input: &str,
    print: bool,
) -> Result<Outcome, Error> {
    let started = sfn
        .start_execution()
        .state_machine_arn(state_machine_arn)
        .name(name)
        .input(input)
        .send()
        .await
        .map_err(|e| sfn_error(sfn, "StartExecution", e))?;
    let arn = started.execution_arn().to_string();
    if print {
        eprintln!("execution {name} started");
    }
    let mut seen = 0usize;
    let mut entered: HashMap<String, aws_sdk_sfn::primitives::DateTime> = HashMap::new();
    let mut states = Vec::new();
    loop {
        let described = sfn
            .describe_execution()
            .execution_arn(&arn)
            .send()
            .await
            .map_err(|e| sfn_error(sfn, "DescribeExecution", e))?;
        let events = history(sfn, &arn).await?;
        for e in events.iter().skip(seen) {
            report(e, &mut entered, &mut states, print);
        }
        seen = events.len();
        if described.status() != &ExecutionStatus::Running {
            let output = described
                .output()
                .and_then(|o| serde_json::from_str(o).ok());
            return Ok(Outcome {
                execution_arn: arn,
                name: name.to_string(),
                status: described.status().as_str().to_string(),
                error: described.error().map(str::to_string),
                cause: described.cause().map(str::to_string),
                output,
                states,
                events: seen,
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn history(sfn: &aws_sdk_sfn::Client, arn: &str) -> Result<Vec<HistoryEvent>, Error> {
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let page = sfn
            .get_execution_history()
            .execution_arn(arn)
            .set_next_token(token)
            .max_results(1000)
            .send()
            .await
            .map_err(|e| sfn_error(sfn, "GetExecutionHistory", e))?;
        all.extend(page.events().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(all);
        }
    }
}

fn seconds_between(
    a: &aws_sdk_sfn::primitives::DateTime,
    b: &aws_sdk_sfn::primitives::DateTime,
) -> f64 {
    (b.as_secs_f64() - a.as_secs_f64()).max(0.0)
}

fn report(
    e: &HistoryEvent,
    entered: &mut HashMap<String, aws_sdk_sfn::primitives::DateTime>,
    states: &mut Vec<(String, f64)>,
    print: bool,
) {
    if let Some(d) = e.state_entered_event_details() {
        entered.insert(d.name().to_string(), *e.timestamp());
        if print {
            eprintln!("  → {}", d.name());
        }
    } else if let Some(d) = e.state_exited_event_details() {
        let secs = entered
            .get(d.name())
            .map(|t| seconds_between(t, e.timestamp()))
            .unwrap_or(0.0);
        states.push((d.name().to_string(), secs));
        if print {
            eprintln!("  ← {} ({secs:.1} s)", d.name());
        }
    } else if print {
        let failure = match e.r#type() {
            HistoryEventType::TaskFailed => e
                .task_failed_event_details()
                .map(|d| (d.error().unwrap_or(""), d.cause().unwrap_or(""))),
            HistoryEventType::LambdaFunctionFailed => e
                .lambda_function_failed_event_details()
                .map(|d| (d.error().unwrap_or(""), d.cause().unwrap_or(""))),
            HistoryEventType::MapStateFailed | HistoryEventType::ExecutionFailed => e
                .execution_failed_event_details()
                .map(|d| (d.error().unwrap_or(""), d.cause().unwrap_or(""))),
            _ => None,
        };
        if let Some((error, cause)) = failure {
            let short: String = cause.chars().take(300).collect();
            eprintln!("    ✗ {error}: {short}");
        }
    }
}
