//! The CodePipeline job worker (pipeline-action), on `CodePipeline.job` events as Lambda
//! receives them. CodePipeline's job API has no emulator, so its answers are simulated with
//! aws-smithy-mocks (each test is named `mocked_…`); Step Functions is the bed's moto engine,
//! running a small state machine that ends the way the protect machine does: SUCCEEDED, or
//! FAILED with `DeployFailed` and a cause of the same shape.
//! A first call starts one execution (a retried one finds it), later calls continue while it
//! runs and then answer with output variables or a failure summary; malformed UserParameters
//! and unexpected errors are answered with a job failure and start nothing.

use aws_lambda_events::event::codepipeline_job::CodePipelineJobEvent;
use aws_sdk_codepipeline::config::retry::RetryConfig;
use aws_sdk_codepipeline::operation::put_job_failure_result::PutJobFailureResultOutput;
use aws_sdk_codepipeline::operation::put_job_success_result::PutJobSuccessResultOutput;
use aws_sdk_codepipeline::Client;
use aws_smithy_mocks::{create_mock_http_client, mock, mock_client, Rule, RuleMode};
use backstop_core::tasks::pipeline_action::{JobAnswer, PipelineJobs};
use serde_json::{json, Value};

use crate::support::{limits_checked, Bed};

/// Ends like the protect machine: `shop-fails` fails with DeployFailed and its cause JSON,
/// anything else succeeds; both after a 2 s wait, so the first look finds it running.
const MACHINE: &str = r#"{
  "StartAt": "Deploying",
  "States": {
    "Deploying": {"Type": "Wait", "Seconds": 2, "Next": "Outcome"},
    "Outcome": {"Type": "Choice",
      "Choices": [{"Variable": "$.application", "StringEquals": "shop-fails", "Next": "DeployFailed"}],
      "Default": "Protected"},
    "Protected": {"Type": "Succeed"},
    "DeployFailed": {"Type": "Fail", "Error": "DeployFailed",
      "Cause": "{\"error\":\"CommandFailed\",\"cause\":\"{\\\"errorType\\\":\\\"CommandFailed\\\",\\\"errorMessage\\\":\\\"migration 0042 failed\\\"}\",\"backup_id\":\"codepipeline-job-fail\",\"restored\":[\"database shop (3 tables, row counts match the backup)\"]}"}
  }
}"#;

/// moto executing the small state machine, and the worker's clients: CodePipeline mocked,
/// Step Functions on moto.
struct Worker {
    bed: Bed,
    sfn: aws_sdk_sfn::Client,
    state_machine_arn: String,
}

fn bed() -> Worker {
    let bed = Bed::new().moto_executing_state_machines().build();
    let state_machine_arn = bed.create_state_machine("protect", MACHINE);
    let sfn = bed.sfn();
    Worker {
        bed,
        sfn,
        state_machine_arn,
    }
}

impl Worker {
    fn worker(&self, rules: &[&Rule], state_machine: Option<&str>) -> PipelineJobs {
        let _in = self.bed.rt.enter();
        let cp = mock_client!(aws_sdk_codepipeline, RuleMode::MatchAny, rules, |c| c
            .http_client(limits_checked(create_mock_http_client()))
            .retry_config(RetryConfig::disabled()));
        PipelineJobs::new(cp, self.sfn.clone(), state_machine.map(str::to_string))
    }

    fn handle(&self, worker: &PipelineJobs, event: Value) -> JobAnswer {
        let event: CodePipelineJobEvent = serde_json::from_value(event).unwrap();
        self.bed.rt.block_on(worker.handle(event)).unwrap()
    }

    /// The error the worker refuses `event` with.
    fn refused(&self, worker: &PipelineJobs, event: CodePipelineJobEvent) -> backstop_core::Error {
        self.bed.rt.block_on(worker.handle(event)).unwrap_err()
    }

    fn executions(&self) -> Vec<String> {
        self.bed.executions(&self.state_machine_arn)
    }

    /// Waits until the execution has ended.
    fn wait_for_end(&self, arn: &str) {
        self.bed.finished(arn);
    }
}

fn run_document(application: &str) -> String {
    json!({
        "application": application,
        "version": {"commit": "3f2a9c1", "pipeline_execution_id": "pipe-exec-1"},
        "targets": [{"type": "database", "secret_id": "prod/shop/db"}],
        "deploy": {"type": "none"}
    })
    .to_string()
}

/// A `CodePipeline.job` event as Lambda receives it.
fn job_event(id: &str, user_parameters: Option<&str>, token: Option<&str>) -> Value {
    let mut configuration = json!({"FunctionName": "backstop-pipeline-action"});
    if let Some(p) = user_parameters {
        configuration["UserParameters"] = json!(p);
    }
    let mut data = json!({
        "actionConfiguration": {"configuration": configuration},
        "inputArtifacts": [],
        "outputArtifacts": [],
        "artifactCredentials": {"accessKeyId": "AKIA", "secretAccessKey": "x", "sessionToken": "y"}
    });
    if let Some(t) = token {
        data["continuationToken"] = json!(t);
    }
    json!({"CodePipeline.job": {"id": id, "accountId": "123456789012", "data": data}})
}

fn continued(job: &'static str) -> Rule {
    mock!(Client::put_job_success_result)
        .match_requests(move |r| {
            r.job_id() == Some(job)
                && r.continuation_token()
                    .is_some_and(|t| t.ends_with(&format!(":codepipeline-{job}")))
                && r.output_variables().is_none()
        })
        .then_output(|| PutJobSuccessResultOutput::builder().build())
}

#[test]
fn mocked_first_call_starts_the_execution_later_calls_continue_then_succeed() {
    let bed = bed();
    let cont = continued("job-1");
    let success = mock!(Client::put_job_success_result)
        .match_requests(|r| {
            let vars = r.output_variables();
            r.job_id() == Some("job-1")
                && r.continuation_token().is_none()
                && vars.and_then(|v| v.get("BACKUP_ID")).map(String::as_str)
                    == Some("codepipeline-job-1")
                && vars
                    .and_then(|v| v.get("EXECUTION_ARN"))
                    .is_some_and(|a| a.ends_with(":execution:protect:codepipeline-job-1"))
        })
        .then_output(|| PutJobSuccessResultOutput::builder().build());
    let worker = bed.worker(&[&cont, &success], Some(&bed.state_machine_arn));
    let params = run_document("shop");
    let first = bed.handle(&worker, job_event("job-1", Some(&params), None));
    let JobAnswer::Continue { execution_arn } = first else {
        panic!("{first:?}")
    };
    assert!(execution_arn.ends_with(":execution:protect:codepipeline-job-1"));
    assert_eq!(bed.executions(), ["codepipeline-job-1"]);
    // Still running: continue again, with the same token.
    let again = bed.handle(&worker, job_event("job-1", None, Some(&execution_arn)));
    assert_eq!(
        again,
        JobAnswer::Continue {
            execution_arn: execution_arn.clone()
        }
    );
    assert_eq!(cont.num_calls(), 2);
    bed.wait_for_end(&execution_arn);
    let done = bed.handle(&worker, job_event("job-1", None, Some(&execution_arn)));
    assert_eq!(
        done,
        JobAnswer::Succeeded {
            execution_arn,
            backup_id: "codepipeline-job-1".to_string()
        }
    );
    assert_eq!(success.num_calls(), 1);
}

#[test]
fn mocked_retried_first_call_starts_no_second_execution() {
    let bed = bed();
    let cont = continued("job-2");
    let worker = bed.worker(&[&cont], Some(&bed.state_machine_arn));
    let params = run_document("shop");
    let event = job_event("job-2", Some(&params), None);
    let first = bed.handle(&worker, event.clone());
    // Retried while the execution runs (Step Functions returns it), then after it ended
    // (ExecutionAlreadyExists): the same execution both times.
    let running = bed.handle(&worker, event.clone());
    assert_eq!(running, first);
    let JobAnswer::Continue { execution_arn } = &first else {
        panic!("{first:?}")
    };
    bed.wait_for_end(execution_arn);
    let ended = bed.handle(&worker, event);
    assert_eq!(ended, first);
    assert_eq!(bed.executions(), ["codepipeline-job-2"]);
    assert_eq!(cont.num_calls(), 3);
}

#[test]
fn mocked_failed_execution_is_answered_with_a_summary_of_what_failed_and_was_restored() {
    let bed = bed();
    let cont = continued("job-fail");
    let failure = mock!(Client::put_job_failure_result)
        .match_requests(|r| {
            let d = r.failure_details().unwrap();
            r.job_id() == Some("job-fail")
                && d.message()
                    == "The deploy failed (CommandFailed: migration 0042 failed). Backstop \
                        restored database shop (3 tables, row counts match the backup) from \
                        backup codepipeline-job-fail, and the checks pass again."
                && d.external_execution_id()
                    .is_some_and(|a| a.ends_with(":codepipeline-job-fail"))
        })
        .then_output(|| PutJobFailureResultOutput::builder().build());
    let worker = bed.worker(&[&cont, &failure], Some(&bed.state_machine_arn));
    let params = run_document("shop-fails");
    let JobAnswer::Continue { execution_arn } =
        bed.handle(&worker, job_event("job-fail", Some(&params), None))
    else {
        panic!("the first call continues")
    };
    bed.wait_for_end(&execution_arn);
    let answer = bed.handle(&worker, job_event("job-fail", None, Some(&execution_arn)));
    assert!(
        matches!(&answer, JobAnswer::Failed { message } if message.starts_with("The deploy failed")),
        "{answer:?}"
    );
    assert_eq!(failure.num_calls(), 1);
}

#[test]
fn mocked_malformed_user_parameters_are_a_job_failure_and_start_nothing() {
    let bed = bed();
    let failure = mock!(Client::put_job_failure_result)
        .match_requests(|r| {
            r.job_id() == Some("job-bad")
                && r.failure_details()
                    .is_some_and(|d| d.message().starts_with("InvalidInput: "))
        })
        .then_output(|| PutJobFailureResultOutput::builder().build());
    let success = mock!(Client::put_job_success_result)
        .then_output(|| PutJobSuccessResultOutput::builder().build());
    let worker = bed.worker(&[&failure, &success], Some(&bed.state_machine_arn));
    for (params, says) in [
        (None, "the action has no UserParameters"),
        (Some("   "), "the action has no UserParameters"),
        (Some("{\"application\": "), "UserParameters is not JSON"),
        (Some("{\"application\": \"shop\"}"), "run document"),
        (
            Some("{\"application\": \"shop\", \"targets\": [], \"deploy\": {\"type\": \"none\"}}"),
            "targets must name at least one",
        ),
    ] {
        let answer = bed.handle(&worker, job_event("job-bad", params, None));
        let JobAnswer::Failed { message } = &answer else {
            panic!("{params:?}: {answer:?}")
        };
        assert!(message.contains(says), "{params:?}: {message}");
    }
    assert_eq!(failure.num_calls(), 5);
    assert_eq!(success.num_calls(), 0);
    assert!(bed.executions().is_empty());
}

#[test]
fn mocked_unexpected_errors_are_a_job_failure_too() {
    let bed = bed();
    let failure = mock!(Client::put_job_failure_result)
        .then_output(|| PutJobFailureResultOutput::builder().build());
    // No state machine configured.
    let worker = bed.worker(&[&failure], None);
    let params = run_document("shop");
    let answer = bed.handle(&worker, job_event("job-x", Some(&params), None));
    assert_eq!(
        answer,
        JobAnswer::Failed {
            message: "InvalidInput: invalid input: BACKSTOP_STATE_MACHINE_ARN is not set"
                .to_string()
        }
    );
    // A continuation token naming no execution.
    let worker = bed.worker(&[&failure], Some(&bed.state_machine_arn));
    let bogus = format!(
        "{}:gone",
        bed.state_machine_arn
            .replace(":stateMachine:", ":execution:")
    );
    let answer = bed.handle(&worker, job_event("job-x", None, Some(&bogus)));
    assert!(
        matches!(&answer, JobAnswer::Failed { message }
            if message.starts_with("StepFunctionsError: Step Functions DescribeExecution failed: ExecutionDoesNotExist")),
        "{answer:?}"
    );
    assert_eq!(failure.num_calls(), 2);
    // No job id: nothing to answer, and nothing is called.
    let params = run_document("shop");
    for id in [None, Some(" ")] {
        let mut event: CodePipelineJobEvent =
            serde_json::from_value(job_event("job-x", Some(&params), None)).unwrap();
        event.code_pipeline_job.id = id.map(str::to_string);
        let err = bed.refused(&worker, event);
        assert_eq!(err.error_type(), "InvalidInput", "{err}");
    }
    // Nor is an event without the job's envelope: it is not the function's input at all.
    assert!(serde_json::from_value::<CodePipelineJobEvent>(json!({})).is_err());
    assert_eq!(failure.num_calls(), 2);
    assert!(bed.executions().is_empty());
}
