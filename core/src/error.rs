//! Named errors. Every failure an operation can report is one variant of [`Error`], and
//! [`Error::error_type`] gives it a stable name that the CLI prints, tests match and, later,
//! Step Functions Retry/Catch refer to. Messages never carry a password.

use std::fmt;

/// Every failure Backstop reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A missing, malformed or contradictory argument; nothing was touched.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The bucket does not exist (or is not reachable with these credentials).
    #[error("bucket {bucket} does not exist")]
    BucketNotFound { bucket: String },
    /// No manifest for this backup id under the prefix.
    #[error("backup {backup_id} not found under s3://{bucket}/{prefix}/")]
    BackupNotFound {
        bucket: String,
        prefix: String,
        backup_id: String,
    },
    /// A manifest exists but cannot be read as a Backstop manifest.
    #[error("manifest s3://{bucket}/{key} is malformed: {reason}")]
    ManifestMalformed {
        bucket: String,
        key: String,
        reason: String,
    },
    /// The backup exists but is not in the `completed` state.
    #[error("backup {backup_id} is {state}, not completed: it cannot be used")]
    BackupNotUsable { backup_id: String, state: String },
    /// The Secrets Manager secret is missing or not in the RDS secret shape.
    #[error("database secret {secret_id}: {reason}")]
    SecretUnusable { secret_id: String, reason: String },
    /// `pg_dump` failed, exited non-zero or was killed.
    #[error("pg_dump failed: {0}")]
    DumpFailed(String),
    /// `pg_restore` failed or exited non-zero.
    #[error("pg_restore failed: {0}")]
    PgRestoreFailed(String),
    /// `pg_restore --list` could not parse the archive.
    #[error("the archive s3://{bucket}/{key} is not readable by pg_restore: {reason}")]
    ArchiveUnreadable {
        bucket: String,
        key: String,
        reason: String,
    },
    /// A PostgreSQL tool could not be started at all.
    #[error("cannot run {tool}: {reason} (set PG_BIN_DIR or PATH)")]
    ToolMissing { tool: String, reason: String },
    /// A SQL session failed (connect, query).
    #[error("database {target}: {reason}")]
    Database { target: String, reason: String },
    /// An S3 call failed.
    #[error("S3 {operation} s3://{bucket}/{key} failed: {reason}")]
    Storage {
        operation: &'static str,
        bucket: String,
        key: String,
        reason: String,
    },
    /// An object the manifest names is not in the bucket.
    #[error("s3://{bucket}/{key} is missing")]
    ArtifactMissing { bucket: String, key: String },
    /// The object's size differs from the manifest's.
    #[error("s3://{bucket}/{key} is {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        bucket: String,
        key: String,
        expected: u64,
        actual: u64,
    },
    /// The object's SHA-256 differs from the manifest's.
    #[error("s3://{bucket}/{key} has SHA-256 {actual}, the manifest says {expected}")]
    ChecksumMismatch {
        bucket: String,
        key: String,
        expected: String,
        actual: String,
    },
    /// Restored row counts differ from the manifest's.
    #[error("row counts in {database} differ from the manifest: {differences}")]
    RowCountMismatch {
        database: String,
        differences: String,
    },
    /// The backup was taken from a newer PostgreSQL major version than the target runs.
    #[error(
        "the backup comes from PostgreSQL {backup_major}, the target server runs {target_major}: \
         restoring into an older major version is refused"
    )]
    IncompatibleServerVersion {
        backup_major: u32,
        target_major: u32,
    },
    /// The swap of databases stopped half-way; the message says exactly what state is left.
    #[error("database swap incomplete: {0}")]
    SwapIncomplete(String),
    /// Some targets of a protected deploy could not be restored; the message names each of
    /// them with its error, and what was restored.
    #[error("the restore is incomplete: {0}")]
    RestoreIncomplete(String),
    /// The operation ran past its deadline and was stopped.
    #[error("{operation} timed out after {seconds} s")]
    TimedOut { operation: String, seconds: u64 },
    /// The operation was cancelled (Ctrl-C, shutdown).
    #[error("{0} was cancelled")]
    Cancelled(String),
    /// An EC2 call failed with a service or transport error.
    #[error("EC2 {operation} failed: {code}: {reason}")]
    Ec2 {
        operation: &'static str,
        code: String,
        reason: String,
    },
    /// A CloudWatch call failed with a service or transport error.
    #[error("CloudWatch {operation} failed: {code}: {reason}")]
    CloudWatch {
        operation: &'static str,
        code: String,
        reason: String,
    },
    /// A restore drill found what it restored not to be what the backup recorded.
    #[error("restore drill failed: {0}")]
    DrillFailed(String),
    /// The backup has no incident report (its deploy did not fail, or ran before reports).
    #[error("backup {backup_id} has no incident report")]
    IncidentNotFound { backup_id: String },
    /// A Step Functions call failed.
    #[error("Step Functions {operation} failed: {code}: {reason}")]
    StepFunctions {
        operation: &'static str,
        code: String,
        reason: String,
    },
    /// A CodePipeline call (a job answer) failed.
    #[error("CodePipeline {operation} failed: {code}: {reason}")]
    CodePipeline {
        operation: &'static str,
        code: String,
        reason: String,
    },
    /// AWS kept throttling a call through every retry.
    #[error("{operation} was still throttled after {attempts} attempts")]
    Throttled { operation: String, attempts: u32 },
    /// The instance does not exist, or is terminated.
    #[error("instance {instance_id} does not exist (or is terminated)")]
    InstanceNotFound { instance_id: String },
    /// A tag filter selected no instance.
    #[error("no instance matches the tag filter {filter}")]
    NoInstancesMatched { filter: String },
    /// The instance has no EBS volume to back up (or none of the selected devices).
    #[error("instance {instance_id} has no EBS volumes to back up{detail}")]
    NoEbsVolumes { instance_id: String, detail: String },
    /// The backup holds no instance with this id.
    #[error(
        "backup {backup_id} holds no backup of instance {instance_id} (it holds: {backed_up})"
    )]
    InstanceNotInBackup {
        backup_id: String,
        instance_id: String,
        backed_up: String,
    },
    /// A snapshot went to `error` or the image to `failed`.
    #[error("backup {backup_id} of instance {instance_id} failed: {reason}")]
    InstanceBackupFailed {
        backup_id: String,
        instance_id: String,
        reason: String,
    },
    /// A deployment or post-restore check failed; the message says which and what it saw.
    #[error("check failed: {0}")]
    VerificationFailed(String),
    /// A state machine execution did not succeed; its own error and cause.
    #[error("execution {name} {status}: {error}: {cause}")]
    ExecutionFailed {
        name: String,
        status: String,
        error: String,
        cause: String,
    },
    /// A restore of an instance failed (for example its replace-root-volume task failed); the
    /// message says what state the instance is left in.
    #[error("restore of instance {instance_id} failed: {reason}")]
    InstanceRestoreFailed { instance_id: String, reason: String },
}

impl Error {
    /// The stable name of this error, e.g. `ChecksumMismatch`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "InvalidInput",
            Error::BucketNotFound { .. } => "BucketNotFound",
            Error::BackupNotFound { .. } => "BackupNotFound",
            Error::ManifestMalformed { .. } => "ManifestMalformed",
            Error::BackupNotUsable { .. } => "BackupNotUsable",
            Error::SecretUnusable { .. } => "SecretUnusable",
            Error::DumpFailed(_) => "DumpFailed",
            Error::PgRestoreFailed(_) => "PgRestoreFailed",
            Error::ArchiveUnreadable { .. } => "ArchiveUnreadable",
            Error::ToolMissing { .. } => "ToolMissing",
            Error::Database { .. } => "DatabaseError",
            Error::Storage { .. } => "StorageError",
            Error::ArtifactMissing { .. } => "ArtifactMissing",
            Error::SizeMismatch { .. } => "SizeMismatch",
            Error::ChecksumMismatch { .. } => "ChecksumMismatch",
            Error::RowCountMismatch { .. } => "RowCountMismatch",
            Error::IncompatibleServerVersion { .. } => "IncompatibleServerVersion",
            Error::SwapIncomplete(_) => "SwapIncomplete",
            Error::RestoreIncomplete(_) => "RestoreIncomplete",
            Error::TimedOut { .. } => "TimedOut",
            Error::Cancelled(_) => "Cancelled",
            Error::Ec2 { .. } => "Ec2Error",
            Error::CloudWatch { .. } => "CloudWatchError",
            Error::IncidentNotFound { .. } => "IncidentNotFound",
            Error::DrillFailed(_) => "DrillFailed",
            Error::StepFunctions { .. } => "StepFunctionsError",
            Error::CodePipeline { .. } => "CodePipelineError",
            Error::Throttled { .. } => "Throttled",
            Error::InstanceNotFound { .. } => "InstanceNotFound",
            Error::NoInstancesMatched { .. } => "NoInstancesMatched",
            Error::NoEbsVolumes { .. } => "NoEbsVolumes",
            Error::InstanceNotInBackup { .. } => "InstanceNotInBackup",
            Error::InstanceBackupFailed { .. } => "InstanceBackupFailed",
            Error::InstanceRestoreFailed { .. } => "InstanceRestoreFailed",
            Error::VerificationFailed(_) => "VerificationFailed",
            Error::ExecutionFailed { .. } => "ExecutionFailed",
        }
    }

    /// Every name [`Error::error_type`] can return, for contract tests.
    pub const ALL_TYPES: &'static [&'static str] = &[
        "InvalidInput",
        "BucketNotFound",
        "BackupNotFound",
        "ManifestMalformed",
        "BackupNotUsable",
        "SecretUnusable",
        "DumpFailed",
        "PgRestoreFailed",
        "ArchiveUnreadable",
        "ToolMissing",
        "DatabaseError",
        "StorageError",
        "ArtifactMissing",
        "SizeMismatch",
        "ChecksumMismatch",
        "RowCountMismatch",
        "IncompatibleServerVersion",
        "SwapIncomplete",
        "RestoreIncomplete",
        "TimedOut",
        "Cancelled",
        "Ec2Error",
        "CloudWatchError",
        "IncidentNotFound",
        "DrillFailed",
        "StepFunctionsError",
        "CodePipelineError",
        "Throttled",
        "InstanceNotFound",
        "NoInstancesMatched",
        "NoEbsVolumes",
        "InstanceNotInBackup",
        "InstanceBackupFailed",
        "InstanceRestoreFailed",
        "VerificationFailed",
        "ExecutionFailed",
    ];
}

/// AWS's error code (`-` when none) and message of a failed SDK call, of any service.
pub(crate) fn aws_code_and_reason<E, R>(
    err: &aws_sdk_ec2::error::SdkError<E, R>,
) -> (String, String)
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
    R: std::fmt::Debug,
{
    use aws_smithy_types::error::metadata::ProvideErrorMetadata;
    let code = err.code().unwrap_or("-").to_string();
    let reason = err
        .message()
        .map(str::to_string)
        .unwrap_or_else(|| aws_smithy_types::error::display::DisplayErrorContext(err).to_string());
    (code, reason)
}

/// Display wrapper printing `ErrorType: message`.
pub struct Named<'a>(pub &'a Error);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.error_type(), self.0)
    }
}
