//! The CodePipeline job worker behind the Lambda invoke action. A first call (no continuation
//! token) reads the run document from the action's UserParameters, starts the protected
//! deploy's execution under a name derived from the job id (a retried call finds that
//! execution and never starts a second) and answers success with the execution ARN as its
//! continuation token. Each later call describes the execution and answers: continue while it
//! runs; success with the output variables `BACKUP_ID` and `EXECUTION_ARN` when it succeeded;
//! failure with a short summary of its Fail cause otherwise. A malformed UserParameters, or any
//! other error once the job id is known, is answered with a job failure too, so no job waits
//! for CodePipeline's timeout.

use std::collections::BTreeMap;

use aws_sdk_codepipeline::types::{ExecutionDetails, FailureDetails, FailureType};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Named};
use crate::executions::{sfn_error, start_named};
use crate::run::RunDocument;
use crate::tasks::DeployFailedCause;

/// The clients the worker answers jobs with, and the state machine it starts.
#[derive(Clone, Debug)]
pub struct PipelineJobs {
    codepipeline: aws_sdk_codepipeline::Client,
    sfn: aws_sdk_sfn::Client,
    state_machine_arn: Option<String>,
}

/// The part of a `CodePipeline.job` event the worker reads.
#[derive(Clone, Debug, Deserialize)]
pub struct JobEvent {
    #[serde(rename = "CodePipeline.job")]
    pub job: PipelineJob,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PipelineJob {
    pub id: String,
    #[serde(default)]
    pub data: JobData,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobData {
    #[serde(default)]
    pub action_configuration: ActionConfiguration,
    /// Set on every call after the first: the execution ARN this worker gave.
    #[serde(default)]
    pub continuation_token: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ActionConfiguration {
    /// `FunctionName` and `UserParameters`, as the pipeline declares them.
    #[serde(default)]
    pub configuration: BTreeMap<String, String>,
}

/// How the worker answered a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum JobAnswer {
    /// `PutJobSuccessResult` with a continuation token: CodePipeline calls again.
    Continue { execution_arn: String },
    /// `PutJobSuccessResult` with the output variables.
    Succeeded {
        execution_arn: String,
        backup_id: String,
    },
    /// `PutJobFailureResult` with this message.
    Failed { message: String },
}

/// CodePipeline takes at most 5,000 characters of failure message.
const MAX_MESSAGE: usize = 4_900;

/// The execution name for a job: `codepipeline-<job id>`, within Step Functions' 80
/// characters of letters, digits, `-` and `_`.
pub fn execution_name(job_id: &str) -> String {
    let clean: String = job_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!("codepipeline-{clean}").chars().take(80).collect()
}

impl PipelineJobs {
    pub fn new(
        codepipeline: aws_sdk_codepipeline::Client,
        sfn: aws_sdk_sfn::Client,
        state_machine_arn: Option<String>,
    ) -> Self {
        PipelineJobs {
            codepipeline,
            sfn,
            state_machine_arn,
        }
    }

    /// Answers one job event. Only an event without a job id is an error: there is no job
    /// to answer. Everything else ends in an answer to CodePipeline.
    pub async fn handle(&self, event: serde_json::Value) -> Result<JobAnswer, Error> {
        let event: JobEvent = serde_json::from_value(event)
            .map_err(|e| Error::InvalidInput(format!("not a CodePipeline job event: {e}")))?;
        let job = event.job;
        if job.id.trim().is_empty() {
            return Err(Error::InvalidInput(
                "the CodePipeline job has an empty id".to_string(),
            ));
        }
        match self.step(&job).await {
            Ok(answer) => Ok(answer),
            Err(e) => {
                let message: String = Named(&e).to_string().chars().take(MAX_MESSAGE).collect();
                tracing::error!(job_id = %job.id, error_type = e.error_type(), error = %e, "job failed");
                self.answer_failure(&job.id, &message, None).await?;
                Ok(JobAnswer::Failed { message })
            }
        }
    }

    async fn step(&self, job: &PipelineJob) -> Result<JobAnswer, Error> {
        let Some(arn) = &job.data.continuation_token else {
            let doc = user_parameters(job)?;
            let arn = self.start(&execution_name(&job.id), &doc).await?;
            self.answer_continue(&job.id, &arn, "the protected deploy started")
                .await?;
            return Ok(JobAnswer::Continue { execution_arn: arn });
        };
        let out = self
            .sfn
            .describe_execution()
            .execution_arn(arn)
            .send()
            .await
            .map_err(|e| sfn_error("DescribeExecution", &e))?;
        let status = out.status().as_str().to_string();
        match status.as_str() {
            "SUCCEEDED" => {
                let backup_id = out.name().unwrap_or_default().to_string();
                self.codepipeline
                    .put_job_success_result()
                    .job_id(&job.id)
                    .execution_details(details(&format!(
                        "the deploy is protected and passed its checks; backup {backup_id}"
                    ))?)
                    .output_variables("BACKUP_ID", &backup_id)
                    .output_variables("EXECUTION_ARN", arn)
                    .send()
                    .await
                    .map_err(|e| codepipeline_error("PutJobSuccessResult", &e))?;
                Ok(JobAnswer::Succeeded {
                    execution_arn: arn.clone(),
                    backup_id,
                })
            }
            "RUNNING" | "PENDING_REDRIVE" => {
                self.answer_continue(&job.id, arn, "the protected deploy is running")
                    .await?;
                Ok(JobAnswer::Continue {
                    execution_arn: arn.clone(),
                })
            }
            _ => {
                let message = summarize_failure(
                    &status,
                    out.error().unwrap_or(""),
                    out.cause().unwrap_or(""),
                );
                self.answer_failure(&job.id, &message, Some(arn)).await?;
                Ok(JobAnswer::Failed { message })
            }
        }
    }

    /// Starts the execution `name`, or finds it when a retried call started it already.
    async fn start(&self, name: &str, doc: &RunDocument) -> Result<String, Error> {
        let state_machine = self.state_machine_arn.as_deref().ok_or_else(|| {
            Error::InvalidInput("BACKSTOP_STATE_MACHINE_ARN is not set".to_string())
        })?;
        let input = serde_json::to_string(doc)
            .map_err(|e| Error::InvalidInput(format!("run document: {e}")))?;
        Ok(start_named(&self.sfn, state_machine, name, &input)
            .await?
            .execution_arn)
    }

    async fn answer_continue(&self, job_id: &str, arn: &str, summary: &str) -> Result<(), Error> {
        self.codepipeline
            .put_job_success_result()
            .job_id(job_id)
            .continuation_token(arn)
            .execution_details(details(summary)?)
            .send()
            .await
            .map_err(|e| codepipeline_error("PutJobSuccessResult", &e))?;
        Ok(())
    }

    async fn answer_failure(
        &self,
        job_id: &str,
        message: &str,
        execution_arn: Option<&str>,
    ) -> Result<(), Error> {
        let details = FailureDetails::builder()
            .r#type(FailureType::JobFailed)
            .message(message)
            .set_external_execution_id(execution_arn.map(str::to_string))
            .build()
            .map_err(|e| Error::InvalidInput(format!("failure details: {e}")))?;
        self.codepipeline
            .put_job_failure_result()
            .job_id(job_id)
            .failure_details(details)
            .send()
            .await
            .map_err(|e| codepipeline_error("PutJobFailureResult", &e))?;
        Ok(())
    }
}

fn details(summary: &str) -> Result<ExecutionDetails, Error> {
    Ok(ExecutionDetails::builder().summary(summary).build())
}

/// The run document in the action's UserParameters.
fn user_parameters(job: &PipelineJob) -> Result<RunDocument, Error> {
    let text = job
        .data
        .action_configuration
        .configuration
        .get("UserParameters")
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            Error::InvalidInput(
                "the action has no UserParameters: they must be the run document (JSON)"
                    .to_string(),
            )
        })?;
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::InvalidInput(format!("UserParameters is not JSON: {e}")))?;
    RunDocument::parse(value)
}

/// `errorType: errorMessage` of a function's `{errorType, errorMessage}` cause; else the text.
pub fn diagnostic_text(cause: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(cause) else {
        return cause.to_string();
    };
    match (
        v.get("errorType").and_then(|t| t.as_str()),
        v.get("errorMessage").and_then(|m| m.as_str()),
    ) {
        (Some(t), Some(m)) => format!("{t}: {m}"),
        (None, Some(m)) => m.to_string(),
        _ => cause.to_string(),
    }
}

/// A short human account of a failed execution from its Fail error and cause: what failed and
/// what was restored.
pub fn summarize_failure(status: &str, error: &str, cause: &str) -> String {
    let text = match error {
        "DeployFailed" => {
            let c = DeployFailedCause::parse(cause).unwrap_or_default();
            let mut what = diagnostic_text(&c.cause);
            if !what.starts_with(&format!("{}:", c.error)) {
                what = format!("{}: {what}", c.error);
            }
            format!(
                "The deploy failed ({what}). Backstop restored {} from backup {}, and the \
                 checks pass again.",
                if c.restored.is_empty() {
                    "nothing".to_string()
                } else {
                    c.restored.join(", ")
                },
                c.backup_id,
            )
        }
        "RestoreFailed" => format!(
            "The deploy failed and the restore did not bring everything back: {}",
            diagnostic_text(cause)
        ),
        "BackupFailed" => format!(
            "The backup failed, so the deploy never ran: {}",
            diagnostic_text(cause)
        ),
        "InvalidInput" => format!("The run document was refused: {}", diagnostic_text(cause)),
        "" => format!("The protected deploy's execution ended {status}."),
        other => format!(
            "The protected deploy's execution ended {status} with {other}: {}",
            diagnostic_text(cause)
        ),
    };
    text.chars().take(MAX_MESSAGE).collect()
}

fn codepipeline_error<E, R>(
    operation: &'static str,
    err: &aws_sdk_codepipeline::error::SdkError<E, R>,
) -> Error
where
    E: aws_sdk_codepipeline::error::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
    R: std::fmt::Debug,
{
    let (code, reason) = crate::error::aws_code_and_reason(err);
    Error::CodePipeline {
        operation,
        code,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_names_are_valid_and_stable() {
        assert_eq!(
            execution_name("11111111-abcd-1111-abcd-111111111111"),
            "codepipeline-11111111-abcd-1111-abcd-111111111111"
        );
        let long = execution_name(&"x/y".repeat(60));
        assert_eq!(long.len(), 80);
        assert!(!long.contains('/'));
    }

    #[test]
    fn failures_are_summarized_by_what_failed_and_what_was_restored() {
        let cause = serde_json::json!({
            "error": "CommandFailed",
            "cause": "{\"errorType\":\"CommandFailed\",\"errorMessage\":\"migration 0042 failed\"}",
            "backup_id": "b-1",
            "restored": ["database shop (3 tables, row counts match the backup)", "instance i-1 (2 volumes)"],
        })
        .to_string();
        assert_eq!(
            summarize_failure("FAILED", "DeployFailed", &cause),
            "The deploy failed (CommandFailed: migration 0042 failed). Backstop \
             restored database shop (3 tables, row counts match the backup), instance i-1 (2 \
             volumes) from backup b-1, and the checks pass again."
        );
        assert_eq!(
            summarize_failure(
                "FAILED",
                "RestoreFailed",
                "{\"errorType\":\"RestoreIncomplete\",\"errorMessage\":\"the restore is incomplete: x\"}"
            ),
            "The deploy failed and the restore did not bring everything back: RestoreIncomplete: \
             the restore is incomplete: x"
        );
        assert_eq!(
            summarize_failure("TIMED_OUT", "", ""),
            "The protected deploy's execution ended TIMED_OUT."
        );
        assert!(summarize_failure("FAILED", "BackupFailed", &"x".repeat(9000)).len() <= 4900);
    }
}
