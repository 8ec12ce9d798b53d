//! AWS: the shared configuration every client is built from (with the one retry layer for
//! throttling), the code and message of a failed call with the call's error kept as the
//! source, and the adapters over the SDK clients the logic uses: EC2, Step Functions,
//! EventBridge and CloudWatch. (S3 sits behind the object store in `store`.)
//!
//! Retries: the SDK's standard retry mode is the only retry inside a process. It retries
//! throttling and transient errors [`MAX_ATTEMPTS`] times in all, with jittered exponential
//! backoff from 1 s up to 20 s (at most 1 + 2 + 4 + 8 = 15 s of waiting per call). A call still
//! throttled after that fails with the named `Throttled` error, which the state machine's
//! Retry tries 3 more times: at most 4 × 5 = 20 requests for one call of one step.

pub mod cloudwatch;
pub mod ec2;
pub mod events;
pub mod permissions;
pub mod sfn;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// The shared AWS configuration, from the standard environment and files.
pub type SharedConfig = aws_config::SdkConfig;

pub use crate::error::Source;

/// Requests per call, the first included, before a throttled or transient failure is final.
pub const MAX_ATTEMPTS: u32 = 5;

/// The one retry layer: the SDK's standard mode, [`MAX_ATTEMPTS`] requests, backoff 1–20 s.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_secs(1))
        .with_max_backoff(Duration::from_secs(20))
}

/// How long one request may take at most, unless `BACKSTOP_AWS_ATTEMPT_TIMEOUT_SECONDS` says
/// otherwise: long enough for a 64 MiB part over a slow link, short enough that a stalled
/// connection is retried well within a function's time.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Explicit bounds on every AWS call, so that no stalled connection holds a step until its
/// function's own timeout: connecting 10 s; waiting for an answer 60 s (or the attempt
/// timeout, if shorter); one attempt `attempt`; the whole call, retries and backoff included,
/// [`MAX_ATTEMPTS`] attempts plus the backoff.
pub fn timeout_config(attempt: Duration) -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10).min(attempt))
        .read_timeout(Duration::from_secs(60).min(attempt))
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt * MAX_ATTEMPTS + Duration::from_secs(60))
        .build()
}

/// The standard AWS configuration (`AWS_ENDPOINT_URL`, region, credentials) with the retry
/// layer above and the [`timeout_config`] bounds.
pub async fn load_config() -> SharedConfig {
    let attempt = std::env::var("BACKSTOP_AWS_ATTEMPT_TIMEOUT_SECONDS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(ATTEMPT_TIMEOUT, Duration::from_secs);
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(retry_config())
        .timeout_config(timeout_config(attempt))
        .load()
        .await
}

/// An S3 client, path-style whenever the configuration names a custom endpoint, since local
/// emulators do not serve virtual-hosted buckets.
pub fn s3_client(shared: &SharedConfig) -> aws_sdk_s3::Client {
    let custom_endpoint = shared.endpoint_url().is_some();
    let conf = aws_sdk_s3::config::Builder::from(shared)
        .force_path_style(custom_endpoint)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A Secrets Manager client.
pub fn secrets_client(shared: &SharedConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(shared)
}

/// The requests one call makes at most under a client's retry configuration.
pub fn attempts_of(retry: Option<&RetryConfig>) -> u32 {
    retry.map(RetryConfig::max_attempts).unwrap_or(1).max(1)
}

/// A failed SDK call, of any service: AWS's error code (`-` when there is none), its message
/// (or the whole error's description when AWS sent none), whether it is throttling, and the
/// error itself as the source.
pub struct Failure {
    pub code: String,
    pub message: String,
    pub throttled: bool,
    pub source: Source,
}

impl Failure {
    pub fn of<E, R>(err: aws_sdk_s3::error::SdkError<E, R>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let code = err.code().unwrap_or("-").to_string();
        let message = err.message().map(str::to_string).unwrap_or_else(|| {
            aws_smithy_types::error::display::DisplayErrorContext(&err).to_string()
        });
        Failure {
            throttled: is_throttling(&code),
            code,
            message,
            source: Box::new(err),
        }
    }
}

/// How a service's own error is built: the operation, AWS's code and message, the call's error.
pub type ServiceError = fn(&'static str, String, String, Option<Source>) -> crate::error::Error;

/// The named error of a failed call of `service`: `Throttled` (naming `service operation` and
/// the attempts its client's `retry` configuration made) when AWS throttled it through every
/// attempt, else the service's own error built by `own`. Every adapter maps its failures here.
pub fn named_error<E, R>(
    err: aws_sdk_s3::error::SdkError<E, R>,
    service: &str,
    operation: &'static str,
    retry: Option<&RetryConfig>,
    own: ServiceError,
) -> crate::error::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let failure = Failure::of(err);
    if failure.throttled {
        return crate::error::Error::Throttled {
            operation: format!("{service} {operation}"),
            attempts: attempts_of(retry),
        };
    }
    own(
        operation,
        failure.code,
        failure.message,
        Some(failure.source),
    )
}

/// Error codes AWS uses for throttling (the SDK's standard retry retries these too).
pub fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "RequestLimitExceeded"
            | "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "TooManyRequestsException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "SlowDown"
            | "EC2ThrottledException"
            | "PriorRequestNotComplete"
            | "BandwidthLimitExceeded"
            | "ProvisionedThroughputExceededException"
    )
}
