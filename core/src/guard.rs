//! Guard mode: for pipelines that deploy in a stage of their own (CodeDeploy, ECS, …) after a
//! Backstop stage took the backup. When a guarded stage fails, EventBridge delivers a
//! `CodePipeline Stage Execution State Change` event with state `FAILED`; guard finds the
//! backup taken for that pipeline execution (its recorded run document names the execution)
//! and starts the protect state machine at its restore path for that backup.
//!
//! EventBridge delivers at least once. The restore execution's name is derived from the
//! backup id, and Step Functions keeps names unique, so a repeated event finds the execution
//! it started and never starts a second restore. An event for a pipeline execution without a
//! backup is logged and published (`GuardFoundNoBackup`) and does nothing else.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::Catalog;
use crate::error::Error;
use crate::executions::{execution_arn, sfn_error, start_named};
use crate::notify::{Notifier, Outcome};

/// The `detail-type` of the events guard mode acts on.
pub const STAGE_EVENT: &str = "CodePipeline Stage Execution State Change";

/// The stages whose failure triggers a restore: `BACKSTOP_GUARD_STAGES`, a comma-separated
/// list of `pipeline:stage`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardConfig {
    pub stages: Vec<GuardedStage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardedStage {
    pub pipeline: String,
    pub stage: String,
}

impl GuardConfig {
    /// Parses `pipeline:stage,pipeline:stage`; empty means no stage is guarded.
    pub fn parse(text: &str) -> Result<GuardConfig, Error> {
        let mut stages = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (pipeline, stage) = item
                .split_once(':')
                .map(|(p, s)| (p.trim(), s.trim()))
                .filter(|(p, s)| !p.is_empty() && !s.is_empty() && !s.contains(':'))
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "guarded stage {item:?} is not pipeline:stage (BACKSTOP_GUARD_STAGES)"
                    ))
                })?;
            stages.push(GuardedStage {
                pipeline: pipeline.to_string(),
                stage: stage.to_string(),
            });
        }
        Ok(GuardConfig { stages })
    }

    fn guards(&self, pipeline: &str, stage: &str) -> bool {
        self.stages
            .iter()
            .any(|g| g.pipeline == pipeline && g.stage == stage)
    }
}

/// The fields of a stage state-change event guard mode reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageEvent {
    pub pipeline: String,
    pub pipeline_execution_id: String,
    pub stage: String,
    pub state: String,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "detail-type")]
    detail_type: String,
    source: String,
    detail: Detail,
}

#[derive(Deserialize)]
struct Detail {
    pipeline: String,
    #[serde(rename = "execution-id")]
    execution_id: String,
    stage: String,
    state: String,
}

impl StageEvent {
    /// Reads an EventBridge event; anything that is not a CodePipeline stage state change
    /// with a pipeline, execution id, stage and state is `InvalidInput`.
    pub fn parse(event: serde_json::Value) -> Result<StageEvent, Error> {
        let e: Envelope = serde_json::from_value(event).map_err(|e| {
            Error::InvalidInput(format!("not a CodePipeline stage state-change event: {e}"))
        })?;
        if e.source != "aws.codepipeline" || e.detail_type != STAGE_EVENT {
            return Err(Error::InvalidInput(format!(
                "guard takes {STAGE_EVENT:?} events from aws.codepipeline, not {:?} from {:?}",
                e.detail_type, e.source
            )));
        }
        for (field, value) in [
            ("pipeline", &e.detail.pipeline),
            ("execution-id", &e.detail.execution_id),
            ("stage", &e.detail.stage),
            ("state", &e.detail.state),
        ] {
            if value.trim().is_empty() {
                return Err(Error::InvalidInput(format!(
                    "the stage event's detail.{field} is empty"
                )));
            }
        }
        Ok(StageEvent {
            pipeline: e.detail.pipeline,
            pipeline_execution_id: e.detail.execution_id,
            stage: e.detail.stage,
            state: e.detail.state,
        })
    }
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

/// The name of the restore execution guard mode starts for a backup: `guard-<backup id>`,
/// within Step Functions' 80 characters (a longer id keeps its start and a hash of the whole).
pub fn execution_name(backup_id: &str) -> String {
    let name = format!("guard-{backup_id}");
    if name.len() <= 80 {
        return name;
    }
    let hash = hex::encode(Sha256::digest(backup_id.as_bytes()));
    let head: String = backup_id.chars().take(56).collect();
    format!("guard-{head}-{}", &hash[..16])
}

/// The error a guard restore starts its restore path with.
pub const STAGE_FAILED: &str = "PipelineStageFailed";

/// Acts on one event: a failed guarded stage whose pipeline execution has a backup starts
/// (once) the restore path of `state_machine` for that backup.
pub async fn handle(
    catalog: &Catalog,
    sfn: &aws_sdk_sfn::Client,
    events: &Notifier,
    state_machine: Option<&str>,
    config: &GuardConfig,
    event: serde_json::Value,
) -> Result<GuardOutcome, Error> {
    let stage = StageEvent::parse(event)?;
    if stage.state != "FAILED" {
        return Ok(GuardOutcome::Ignored {
            reason: format!("stage {} is {}, not FAILED", stage.stage, stage.state),
        });
    }
    if !config.guards(&stage.pipeline, &stage.stage) {
        return Ok(GuardOutcome::Ignored {
            reason: format!(
                "stage {} of pipeline {} is not guarded (BACKSTOP_GUARD_STAGES)",
                stage.stage, stage.pipeline
            ),
        });
    }
    let state_machine = state_machine
        .ok_or_else(|| Error::InvalidInput("BACKSTOP_STATE_MACHINE_ARN is not set".to_string()))?;
    let Some((manifest, run)) = catalog
        .find_by_pipeline_execution(&stage.pipeline_execution_id)
        .await?
    else {
        let summary = format!(
            "stage {} of pipeline {} failed in execution {}, but no verified backup was taken \
             for that execution: nothing was restored",
            stage.stage, stage.pipeline, stage.pipeline_execution_id
        );
        tracing::warn!(pipeline = %stage.pipeline, stage = %stage.stage,
            pipeline_execution_id = %stage.pipeline_execution_id, "{summary}");
        events
            .publish(
                Outcome::GuardFoundNoBackup,
                "",
                "",
                &summary,
                serde_json::json!({
                    "pipeline": stage.pipeline,
                    "stage": stage.stage,
                    "pipeline_execution_id": stage.pipeline_execution_id,
                }),
            )
            .await;
        return Ok(GuardOutcome::NoBackup {
            pipeline: stage.pipeline,
            stage: stage.stage,
            pipeline_execution_id: stage.pipeline_execution_id,
        });
    };
    let name = execution_name(&manifest.backup_id);
    let arn = execution_arn(state_machine, &name);
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
        Err(e) => return Err(sfn_error("DescribeExecution", &e)),
    }
    // Only what identifies the failure goes into the input: a repeated event builds the same
    // input, so Step Functions treats its start as the same execution.
    let input = serde_json::json!({
        "restore_of": {
            "backup_id": manifest.backup_id,
            "run": run,
            "failure": {
                "Error": STAGE_FAILED,
                "Cause": format!(
                    "stage {} of pipeline {} failed (pipeline execution {})",
                    stage.stage, stage.pipeline, stage.pipeline_execution_id
                ),
            },
        }
    });
    let started = start_named(sfn, state_machine, &name, &input.to_string()).await?;
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

    #[test]
    fn config_lists_pipeline_stage_pairs() {
        let c = GuardConfig::parse(" shop:Deploy, billing:Release ").unwrap();
        assert!(c.guards("shop", "Deploy"));
        assert!(c.guards("billing", "Release"));
        assert!(!c.guards("shop", "Release"));
        assert_eq!(GuardConfig::parse("").unwrap().stages, vec![]);
        for bad in ["shop", "shop:", ":Deploy", "a:b:c"] {
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
