//! Guard mode: for pipelines that deploy in a stage of their own (CodeDeploy, ECS, …) after a
//! Backstop stage took the backup. When a guarded stage fails, EventBridge delivers a
//! `CodePipeline Stage Execution State Change` event with state `FAILED`; guard finds the
//! backup taken for that pipeline execution (its recorded run document names the execution)
//! and starts the protect state machine at its restore path for that backup.
//!
//! Guard also watches the protect state machine itself: a protect execution that ends FAILED,
//! TIMED_OUT or ABORTED after its deploy began, without reaching its restore (what no Catch
//! can see: `States.Runtime`, `States.DataLimitExceeded`, a StopExecution, the execution's own
//! timeout, a Lambda lost past its retries), arrives as a `Step Functions Execution Status
//! Change` event; guard reads the execution's history, and when its deploy began and its
//! restore path never ran, starts the restore path for its backup and publishes
//! `DeployInterrupted`.
//!
//! EventBridge delivers at least once. The restore execution's name is derived from the
//! backup id, and Step Functions keeps names unique, so a repeated event finds the execution
//! it started and never starts a second restore. An event for a pipeline execution without a
//! backup is logged and published (`GuardFoundNoBackup`) and does nothing else.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Serialize};

use crate::aws::events::{EventDetail, Outcome};
use crate::aws::sfn::{execution_arn, execution_trail, sfn_error, start_named};
use crate::context::Context;
use crate::error::Error;
use crate::model::job::{bounded, RestoreOf, StepFailure};
use crate::model::manifest::Manifest;

/// The `detail-type` of the events guard mode acts on.
pub const STAGE_EVENT: &str = "CodePipeline Stage Execution State Change";

/// The detail of a `CodePipeline Stage Execution State Change` event, as guard reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageDetail {
    pub pipeline: String,
    #[serde(rename = "execution-id")]
    pub execution_id: String,
    pub stage: String,
    /// `STARTED`, `SUCCEEDED`, `RESUMED`, `FAILED`, `CANCELED`, `STOPPED`, `STOPPING`.
    pub state: String,
}

/// The state of a failed stage in the event. EventBridge spells CodePipeline's states in
/// capitals (`FAILED`), unlike the API's `StageExecutionStatus` (`Failed`).
pub const STAGE_STATE_FAILED: &str = "FAILED";

/// EventBridge's envelope around a stage state change.
pub type StageEvent = EventBridgeEvent<StageDetail>;

/// The `detail-type` of a Step Functions execution's status change.
pub const EXECUTION_EVENT: &str = "Step Functions Execution Status Change";

/// The detail of a `Step Functions Execution Status Change` event, as guard reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionDetail {
    pub execution_arn: String,
    pub state_machine_arn: String,
    pub name: String,
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, `TIMED_OUT`, `ABORTED`, …
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub cause: Option<String>,
}

/// Either event guard takes, told apart by source and detail-type.
pub type GuardEvent = EventBridgeEvent<serde_json::Value>;

/// The ends a protect execution reaches through its own paths: each already restored, or had
/// nothing to restore.
const DESIGNED_ENDS: [&str; 5] = [
    "DeployFailed",
    "RestoreFailed",
    "BackupFailed",
    "InvalidInput",
    "PrepareFailed",
];

/// The states that mean the deploy began.
const DEPLOY_STATES: [&str; 2] = ["DeployLambda", "DeployCodeBuild"];

/// Checks the event is a CodePipeline stage state change with every field given.
fn check(event: &StageEvent) -> Result<(), Error> {
    if event.source != "aws.codepipeline" || event.detail_type != STAGE_EVENT {
        return Err(Error::InvalidInput(format!(
            "guard takes {STAGE_EVENT:?} events from aws.codepipeline, not {:?} from {:?}",
            event.detail_type, event.source
        )));
    }
    let d = &event.detail;
    for (field, value) in [
        ("pipeline", &d.pipeline),
        ("execution-id", &d.execution_id),
        ("stage", &d.stage),
        ("state", &d.state),
    ] {
        if value.trim().is_empty() {
            return Err(Error::InvalidInput(format!(
                "the stage event's detail.{field} is empty"
            )));
        }
    }
    Ok(())
}

/// The input guard starts the protect state machine with: the Entry choice sends it to the
/// restore path (GuardRestore).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuardRestoreInput {
    pub restore_of: RestoreOf,
}

/// What guard did with one event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum GuardOutcome {
    /// Not a failure of a guarded stage.
    Ignored { reason: String },
    /// No verified backup names this pipeline execution: nothing to restore.
    NoBackup {
        pipeline: String,
        stage: String,
        pipeline_execution_id: String,
    },
    /// The restore path started for the backup.
    RestoreStarted {
        backup_id: String,
        execution_arn: String,
    },
    /// A restore of this backup was started before (a repeated event): nothing more started.
    AlreadyStarted {
        backup_id: String,
        execution_arn: String,
        status: String,
    },
}

pub use crate::model::job::guard_execution_name as execution_name;

/// The error a guard restore starts its restore path with.
pub const STAGE_FAILED: &str = "PipelineStageFailed";

/// Acts on one event: a failed guarded stage, or a protect execution that ended after its
/// deploy began without restoring (see the module's documentation).
pub async fn handle(ctx: &Context, event: GuardEvent) -> Result<GuardOutcome, Error> {
    match (event.source.as_str(), event.detail_type.as_str()) {
        ("aws.states", EXECUTION_EVENT) => {
            let detail: ExecutionDetail = serde_json::from_value(event.detail)
                .map_err(|e| Error::InvalidInput(format!("the execution event's detail: {e}")))?;
            handle_execution(ctx, detail).await
        }
        _ => {
            let stage: StageEvent = serde_json::from_value(
                serde_json::to_value(&event)
                    .map_err(|e| Error::InvalidInput(format!("the event: {e}")))?,
            )
            .map_err(|e| Error::InvalidInput(format!("the stage event: {e}")))?;
            handle_stage(ctx, stage).await
        }
    }
}

/// A failed guarded stage whose pipeline execution has a backup starts (once) the restore
/// path of the state machine for that backup.
pub async fn handle_stage(ctx: &Context, event: StageEvent) -> Result<GuardOutcome, Error> {
    check(&event)?;
    let stage = event.detail;
    if stage.state != STAGE_STATE_FAILED {
        return Ok(GuardOutcome::Ignored {
            reason: format!("stage {} is {}, not FAILED", stage.stage, stage.state),
        });
    }
    if !ctx.config.guard.guards(&stage.pipeline, &stage.stage) {
        return Ok(GuardOutcome::Ignored {
            reason: format!(
                "stage {} of pipeline {} is not guarded (BACKSTOP_GUARD_STAGES)",
                stage.stage, stage.pipeline
            ),
        });
    }
    let state_machine = ctx.config.state_machine()?;
    // The application whose backup the stage protects: the one the operator names for the
    // stage, else the only one that recorded a backup for this execution.
    let application = match ctx.config.guard.application(&stage.pipeline, &stage.stage) {
        Some(app) => Some(app.to_string()),
        None => {
            let apps = ctx
                .catalog()
                .pipeline_execution_applications(&stage.execution_id)
                .await?;
            if apps.len() > 1 {
                return Err(Error::InvalidInput(format!(
                    "applications {} each recorded a backup for pipeline execution {}: name the \
                     stage's application in BACKSTOP_GUARD_STAGES (pipeline:stage:application)",
                    apps.join(", "),
                    stage.execution_id
                )));
            }
            apps.into_iter().next()
        }
    };
    let found = match &application {
        Some(app) => {
            ctx.catalog()
                .find_by_pipeline_execution(&stage.execution_id, app)
                .await?
        }
        None => None,
    };
    let Some((manifest, _run)) = found else {
        let summary = format!(
            "stage {} of pipeline {} failed in execution {}, but no verified backup was taken \
             for that execution: nothing was restored",
            stage.stage, stage.pipeline, stage.execution_id
        );
        tracing::warn!(pipeline = %stage.pipeline, stage = %stage.stage,
            pipeline_execution_id = %stage.execution_id, "{summary}");
        let mut detail = EventDetail::new(summary, "", "");
        detail.pipeline = Some(stage.pipeline.clone());
        detail.stage = Some(stage.stage.clone());
        detail.pipeline_execution_id = Some(stage.execution_id.clone());
        ctx.events()
            .publish(Outcome::GuardFoundNoBackup, &detail)
            .await;
        return Ok(GuardOutcome::NoBackup {
            pipeline: stage.pipeline,
            stage: stage.stage,
            pipeline_execution_id: stage.execution_id,
        });
    };
    let failure = StepFailure {
        error: STAGE_FAILED.to_string(),
        cause: format!(
            "stage {} of pipeline {} failed (pipeline execution {})",
            stage.stage, stage.pipeline, stage.execution_id
        ),
    };
    start_restore(ctx, state_machine, manifest, failure).await
}

/// A protect execution that ended FAILED, TIMED_OUT or ABORTED after its deploy began, and
/// never entered its restore path, starts (once) the restore path for its backup.
pub async fn handle_execution(
    ctx: &Context,
    execution: ExecutionDetail,
) -> Result<GuardOutcome, Error> {
    let ignored = |reason: String| Ok(GuardOutcome::Ignored { reason });
    let state_machine = ctx.config.state_machine()?;
    if !matches!(
        execution.status.as_str(),
        "FAILED" | "TIMED_OUT" | "ABORTED"
    ) {
        return ignored(format!(
            "execution {} is {}",
            execution.name, execution.status
        ));
    }
    if execution.state_machine_arn != state_machine {
        return ignored(format!(
            "execution {} is of another state machine",
            execution.name
        ));
    }
    if execution.name.starts_with("guard-") {
        return ignored(format!(
            "execution {} is itself a guard restore (its incident report says how it ended)",
            execution.name
        ));
    }
    if let Some(error) = execution
        .error
        .as_deref()
        .filter(|e| DESIGNED_ENDS.contains(e))
    {
        return ignored(format!(
            "execution {} ended with {error} through its own path",
            execution.name
        ));
    }
    let trail = execution_trail(ctx.sfn(), &execution.execution_arn).await?;
    if trail.entered.iter().any(|s| s == "RestoreTargets") {
        return ignored(format!("execution {} reached its restore", execution.name));
    }
    if !trail
        .entered
        .iter()
        .any(|s| DEPLOY_STATES.contains(&s.as_str()))
    {
        return ignored(format!(
            "execution {} ended before its deploy began: nothing to restore",
            execution.name
        ));
    }
    // The backup id is the execution's name; its application is in the run it started with.
    let application = trail
        .input
        .as_deref()
        .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
        .and_then(|v| v["application"].as_str().map(str::to_string))
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "execution {}'s history holds no input naming its application",
                execution.name
            ))
        })?;
    let mut manifest = ctx
        .catalog()
        .manifest(&application, &execution.name)
        .await?;
    manifest.run.take().ok_or_else(|| Error::BackupNotUsable {
        backup_id: execution.name.clone(),
        state: "its run was never recorded, so it was never verified".to_string(),
    })?;
    let why = match (&execution.error, &execution.cause) {
        (Some(e), Some(c)) => format!("{e}: {}", bounded(c, 2000)),
        (Some(e), None) => e.clone(),
        _ => execution.status.clone(),
    };
    let failure = StepFailure {
        error: format!("Execution{}", title(&execution.status)),
        cause: format!(
            "protect execution {} ended {} ({why}) after its deploy began, without reaching its \
             restore",
            execution.name, execution.status
        ),
    };
    let outcome = start_restore(ctx, state_machine, manifest, failure.clone()).await?;
    if let GuardOutcome::RestoreStarted { backup_id, .. } = &outcome {
        let detail = EventDetail::new(&failure.cause, &application, backup_id);
        ctx.events()
            .publish(Outcome::DeployInterrupted, &detail)
            .await;
    }
    Ok(outcome)
}

/// `TIMED_OUT` → `TimedOut`.
fn title(status: &str) -> String {
    status
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f
                    .to_uppercase()
                    .chain(c.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect()
}

/// Starts (once) the restore path of `state_machine` for `manifest`'s backup, with its recorded
/// `run` and the `failure` that calls for it.
async fn start_restore(
    ctx: &Context,
    state_machine: &str,
    manifest: Manifest,
    failure: StepFailure,
) -> Result<GuardOutcome, Error> {
    let sfn = ctx.sfn();
    let name = execution_name(&manifest.backup_id);
    let arn = execution_arn(state_machine, &name);
    crate::aws::permissions::check("states:DescribeExecution")?;
    match sfn.describe_execution().execution_arn(&arn).send().await {
        Ok(found) => {
            return Ok(GuardOutcome::AlreadyStarted {
                backup_id: manifest.backup_id,
                execution_arn: arn,
                status: found.status().as_str().to_string(),
            })
        }
        Err(e)
            if aws_sdk_sfn::error::ProvideErrorMetadata::code(&e)
                == Some("ExecutionDoesNotExist") => {}
        Err(e) => return Err(sfn_error(sfn, "DescribeExecution", e)),
    }
    // Only what identifies the failure goes into the input: a repeated event builds the same
    // input, so Step Functions treats its start as the same execution. The record in the
    // catalog, which only guard writes, is what authorises the restore.
    let restore_of = RestoreOf {
        application: manifest.application.clone(),
        backup_id: manifest.backup_id.clone(),
        failure,
    };
    ctx.catalog()
        .record_restore_request(&name, &restore_of)
        .await?;
    let input = GuardRestoreInput { restore_of };
    let input = serde_json::to_string(&input)
        .map_err(|e| Error::InvalidInput(format!("the restore's input: {e}")))?;
    let started = start_named(sfn, state_machine, &name, &input).await?;
    if !started.new {
        return Ok(GuardOutcome::AlreadyStarted {
            backup_id: manifest.backup_id,
            execution_arn: started.execution_arn,
            status: "started before".to_string(),
        });
    }
    tracing::info!(backup_id = %manifest.backup_id, execution_arn = %started.execution_arn,
        "guard restore started");
    Ok(GuardOutcome::RestoreStarted {
        backup_id: manifest.backup_id,
        execution_arn: started.execution_arn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::GuardConfig;

    #[test]
    fn config_lists_pipeline_stage_pairs() {
        let c = GuardConfig::parse(" shop:Deploy, billing:Release ").unwrap();
        assert!(c.guards("shop", "Deploy"));
        assert!(c.guards("billing", "Release"));
        assert!(!c.guards("shop", "Release"));
        assert_eq!(GuardConfig::parse("").unwrap().stages, vec![]);
        for bad in ["shop", "shop:", ":Deploy", "a:b:c:d", "a:b:c/d"] {
            let e = GuardConfig::parse(bad).unwrap_err();
            assert_eq!(e.error_type(), "InvalidInput", "{bad}");
        }
    }

    #[test]
    fn execution_names_fit_and_stay_distinct() {
        assert_eq!(execution_name("codepipeline-abc"), "guard-codepipeline-abc");
        let a = execution_name(&"a".repeat(80));
        let b = execution_name(&format!("{}b", "a".repeat(79)));
        assert!(a.len() <= 80 && b.len() <= 80, "{a} {b}");
        assert_ne!(a, b);
    }
}
