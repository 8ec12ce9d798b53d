//! The CodePipeline job worker behind the Lambda invoke action. A first call (no continuation
//! token) reads the run document from the action's UserParameters, starts the protected
//! deploy's execution under a name derived from the job id (a retried call finds that
//! execution and never starts a second) and answers success with the execution ARN as its
//! continuation token. Each later call describes the execution and answers: continue while it
//! runs; success with the output variables `BACKUP_ID` and `EXECUTION_ARN` when it succeeded;
//! failure with a short summary of its Fail cause otherwise. A malformed UserParameters, or any
//! other error once the job id is known, is answered with a job failure too, so no job waits
//! for CodePipeline's timeout.

use aws_lambda_events::event::codepipeline_job::{CodePipelineJob, CodePipelineJobEvent};
use aws_sdk_codepipeline::types::{ExecutionDetails, FailureDetails, FailureType};
use aws_sdk_sfn::types::ExecutionStatus;
use serde::{Deserialize, Serialize};

use crate::aws::sfn::{sfn_error, start_named};
use crate::aws::{named_error, ServiceError};
use crate::context::Context;
use crate::error::{Error, Named};
use crate::model::job::{diagnostic_text, DeployFailedCause};
use crate::model::run::RunDocument;

/// Answers one job event with the context's clients and state machine.
pub async fn handle(ctx: &Context, event: CodePipelineJobEvent) -> Result<JobAnswer, Error> {
    PipelineJobs::new(
        ctx.codepipeline().clone(),
        ctx.sfn().clone(),
        ctx.config.state_machine_arn.clone(),
    )
    .handle(event)
    .await
}

/// The clients the worker answers jobs with, and the state machine it starts.
#[derive(Clone, Debug)]
pub struct PipelineJobs {
    codepipeline: aws_sdk_codepipeline::Client,
    sfn: aws_sdk_sfn::Client,
    state_machine_arn: Option<String>,
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
    pub async fn handle(&self, event: CodePipelineJobEvent) -> Result<JobAnswer, Error> {
        let job = event.code_pipeline_job;
        let id = job.id.clone().unwrap_or_default();
        if id.trim().is_empty() {
            return Err(Error::InvalidInput(
                "the CodePipeline job has no id".to_string(),
            ));
        }
        match self.step(&id, &job).await {
            Ok(answer) => Ok(answer),
            Err(e) => {
                let message: String = Named(&e).to_string().chars().take(MAX_MESSAGE).collect();
                tracing::error!(job_id = %id, error_type = e.error_type(), error = %e, "job failed");
                self.answer_failure(&id, &message, None).await?;
                Ok(JobAnswer::Failed { message })
            }
        }
    }

    async fn step(&self, job_id: &str, job: &CodePipelineJob) -> Result<JobAnswer, Error> {
        let Some(arn) = &job.data.continuation_token else {
            let doc = user_parameters(job)?;
            let arn = self.start(&execution_name(job_id), &doc).await?;
            self.answer_continue(job_id, &arn, "the protected deploy started")
                .await?;
            return Ok(JobAnswer::Continue { execution_arn: arn });
        };
        crate::aws::permissions::check("states:DescribeExecution")?;
        let out = self
            .sfn
            .describe_execution()
            .execution_arn(arn)
            .send()
            .await
            .map_err(|e| sfn_error(&self.sfn, "DescribeExecution", e))?;
        match out.status() {
            ExecutionStatus::Succeeded => {
                let backup_id = out.name().unwrap_or_default().to_string();
                crate::aws::permissions::check("codepipeline:PutJobSuccessResult")?;
                self.codepipeline
                    .put_job_success_result()
                    .job_id(job_id)
                    .execution_details(details(&format!(
                        "the deploy is protected and passed its checks; backup {backup_id}"
                    ))?)
                    .output_variables("BACKUP_ID", &backup_id)
                    .output_variables("EXECUTION_ARN", arn)
                    .send()
                    .await
                    .map_err(|e| self.failed("PutJobSuccessResult", e))?;
                Ok(JobAnswer::Succeeded {
                    execution_arn: arn.clone(),
                    backup_id,
                })
            }
            ExecutionStatus::Running | ExecutionStatus::PendingRedrive => {
                self.answer_continue(job_id, arn, "the protected deploy is running")
                    .await?;
                Ok(JobAnswer::Continue {
                    execution_arn: arn.clone(),
                })
            }
            status => {
                let message = summarize_failure(
                    status.as_str(),
                    out.error().unwrap_or(""),
                    out.cause().unwrap_or(""),
                );
                self.answer_failure(job_id, &message, Some(arn)).await?;
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
        crate::aws::permissions::check("codepipeline:PutJobSuccessResult")?;
        self.codepipeline
            .put_job_success_result()
            .job_id(job_id)
            .continuation_token(arn)
            .execution_details(details(summary)?)
            .send()
            .await
            .map_err(|e| self.failed("PutJobSuccessResult", e))?;
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
        crate::aws::permissions::check("codepipeline:PutJobFailureResult")?;
        self.codepipeline
            .put_job_failure_result()
            .job_id(job_id)
            .failure_details(details)
            .send()
            .await
            .map_err(|e| self.failed("PutJobFailureResult", e))?;
        Ok(())
    }
}

/// CodePipeline's own error.
const CODEPIPELINE: ServiceError = |operation, code, reason, source| Error::CodePipeline {
    operation,
    code,
    reason,
    source,
};

impl PipelineJobs {
    /// `CodePipelineError`, or `Throttled` after the client's retries.
    fn failed<E, R>(
        &self,
        operation: &'static str,
        err: aws_sdk_codepipeline::error::SdkError<E, R>,
    ) -> Error
    where
        E: aws_sdk_codepipeline::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let retry = self.codepipeline.config().retry_config();
        named_error(err, "CodePipeline", operation, retry, CODEPIPELINE)
    }
}

fn details(summary: &str) -> Result<ExecutionDetails, Error> {
    Ok(ExecutionDetails::builder().summary(summary).build())
}

/// The run document in the action's UserParameters.
fn user_parameters(job: &CodePipelineJob) -> Result<RunDocument, Error> {
    let text = job
        .data
        .action_configuration
        .configuration
        .user_parameters
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            Error::InvalidInput(
                "the action has no UserParameters: they must be the run document (JSON)"
                    .to_string(),
            )
        })?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| Error::InvalidInput(format!("UserParameters is not JSON: {e}")))?;
    RunDocument::from_json(text)
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
