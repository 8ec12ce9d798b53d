//! `Throttled` after the client's retries, simulated with aws-smithy-mocks: the SDK's standard
//! retry is the only retry layer, so a call AWS keeps throttling is sent exactly as many times
//! as the client is configured for, then fails with the named `Throttled` error saying which
//! call and how many attempts (what the state machine's Retry matches); any other failure is
//! the service's named error, sent once, with the SDK's error kept as its source.

use std::error::Error as _;
use std::time::Duration;

use aws_lambda_events::event::codepipeline_job::CodePipelineJobEvent;
use aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsError;
use aws_sdk_codepipeline::operation::put_job_failure_result::PutJobFailureResultError;
use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::describe_volumes::DescribeVolumesError;
use aws_smithy_mocks::{create_mock_http_client, mock, mock_client, RuleMode};
use backstop_core::aws::cloudwatch::Alarms;
use backstop_core::aws::ec2::Ec2;
use backstop_core::model::run::AlarmCheck;
use backstop_core::tasks::pipeline_action::PipelineJobs;
use backstop_core::Error;
use serde_json::json;

use crate::block_on;
use crate::support::{closed_port_shared, limits_checked, sample_event};

/// Requests per call, as these clients are configured.
const ATTEMPTS: u32 = 3;

fn retry() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard()
        .with_max_attempts(ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(2))
}

fn meta(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(code)
        .message(format!("simulated {code}"))
        .build()
}

fn throttled(err: &Error) -> (String, u32) {
    match err {
        Error::Throttled {
            operation,
            attempts,
        } => (operation.clone(), *attempts),
        other => panic!("not Throttled: {other:?}"),
    }
}

#[test]
fn mocked_ec2_call_still_throttled_after_the_clients_retries_is_throttled() {
    let throttling = mock!(aws_sdk_ec2::Client::describe_volumes)
        .then_error(|| DescribeVolumesError::generic(meta("RequestLimitExceeded")));
    let ec2 = Ec2::new(mock_client!(
        aws_sdk_ec2,
        RuleMode::MatchAny,
        [&throttling],
        |c| c
            .http_client(limits_checked(create_mock_http_client()))
            .retry_config(retry())
    ));
    let err = block_on(ec2.call("DescribeVolumes", |c| c.describe_volumes().send())).unwrap_err();
    assert_eq!(err.error_type(), "Throttled");
    assert_eq!(
        throttled(&err),
        ("EC2 DescribeVolumes".to_string(), ATTEMPTS)
    );
    assert_eq!(
        err.to_string(),
        format!("EC2 DescribeVolumes was still throttled after {ATTEMPTS} attempts")
    );
    assert_eq!(throttling.num_calls(), ATTEMPTS as usize);

    let denied = mock!(aws_sdk_ec2::Client::describe_volumes)
        .then_error(|| DescribeVolumesError::generic(meta("UnauthorizedOperation")));
    let ec2 = Ec2::new(mock_client!(
        aws_sdk_ec2,
        RuleMode::MatchAny,
        [&denied],
        |c| c
            .http_client(limits_checked(create_mock_http_client()))
            .retry_config(retry())
    ));
    let err = block_on(ec2.call("DescribeVolumes", |c| c.describe_volumes().send())).unwrap_err();
    assert_eq!(err.error_type(), "Ec2Error", "{err}");
    assert_eq!(
        err.to_string(),
        "EC2 DescribeVolumes failed: UnauthorizedOperation: simulated UnauthorizedOperation"
    );
    assert!(err.source().is_some(), "the SDK's error is kept");
    assert_eq!(denied.num_calls(), 1, "only throttling is retried");
}

#[test]
fn mocked_cloudwatch_call_still_throttled_after_the_clients_retries_is_throttled() {
    let throttling = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .then_error(|| DescribeAlarmsError::generic(meta("Throttling")));
    let alarms = Alarms::new(mock_client!(
        aws_sdk_cloudwatch,
        RuleMode::MatchAny,
        [&throttling],
        |c| c
            .http_client(limits_checked(create_mock_http_client()))
            .retry_config(retry())
    ));
    let check = AlarmCheck {
        name: Some("shop-5xx".to_string()),
        name_prefix: None,
    };
    let err = block_on(alarms.select(&check)).unwrap_err();
    assert_eq!(
        throttled(&err),
        ("CloudWatch DescribeAlarms".to_string(), ATTEMPTS)
    );
    assert_eq!(throttling.num_calls(), ATTEMPTS as usize);
}

#[test]
fn mocked_codepipeline_answer_still_throttled_after_the_clients_retries_is_throttled() {
    let throttling = mock!(aws_sdk_codepipeline::Client::put_job_failure_result)
        .then_error(|| PutJobFailureResultError::generic(meta("ThrottlingException")));
    let codepipeline = mock_client!(
        aws_sdk_codepipeline,
        RuleMode::MatchAny,
        [&throttling],
        |c| c
            .http_client(limits_checked(create_mock_http_client()))
            .retry_config(retry())
    );
    // Step Functions is never reached: the job's UserParameters are not a run document.
    let sfn = aws_sdk_sfn::Client::new(&closed_port_shared());
    let jobs = PipelineJobs::new(codepipeline, sfn, Some("arn:aws:states:x".to_string()));
    let mut event = sample_event("pipeline-action");
    event["CodePipeline.job"]["data"]["actionConfiguration"]["configuration"]["UserParameters"] =
        json!("{\"application\": ");
    let event: CodePipelineJobEvent = serde_json::from_value(event).unwrap();
    // The failure could not be answered: the error is the throttling, for the Lambda's retry.
    let err = block_on(jobs.handle(event)).unwrap_err();
    assert_eq!(
        throttled(&err),
        ("CodePipeline PutJobFailureResult".to_string(), ATTEMPTS)
    );
    assert_eq!(throttling.num_calls(), ATTEMPTS as usize);
}
