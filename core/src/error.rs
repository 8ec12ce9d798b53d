//! Named errors. Every failure an operation can report is one variant of [`Error`], and its
//! name, declared once on the variant (the variant's own name, or its `strum(serialize)`),
//! is the stable `error_type` that the CLI prints, tests match and the state machine's Retry
//! and Catch refer to. [`Error::ALL_TYPES`] lists them all. Messages never carry a password;
//! an AWS call's own error is kept as the source.

use std::fmt;

/// The error an AWS call failed with, kept as the source of a named error.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every failure Backstop reports.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr, strum::VariantNames)]
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
    SecretUnusable {
        secret_id: String,
        reason: String,
        #[source]
        source: Option<Source>,
    },
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
    #[strum(serialize = "DatabaseError")]
    Database { target: String, reason: String },
    /// An S3 call failed.
    #[error("S3 {operation} s3://{bucket}/{key} failed: {reason}")]
    #[strum(serialize = "StorageError")]
    Storage {
        operation: &'static str,
        bucket: String,
        key: String,
        reason: String,
        #[source]
        source: Option<Source>,
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
    #[strum(serialize = "Ec2Error")]
    Ec2 {
        operation: &'static str,
        code: String,
        reason: String,
        #[source]
        source: Option<Source>,
    },
    /// A CloudWatch call failed with a service or transport error.
    #[error("CloudWatch {operation} failed: {code}: {reason}")]
    #[strum(serialize = "CloudWatchError")]
    CloudWatch {
        operation: &'static str,
        code: String,
        reason: String,
        #[source]
        source: Option<Source>,
    },
    /// A restore drill found what it restored not to be what the backup recorded.
    #[error("restore drill failed: {0}")]
    DrillFailed(String),
    /// The backup has no incident report (its deploy did not fail, or ran before reports).
    #[error("backup {backup_id} has no incident report")]
    IncidentNotFound { backup_id: String },
    /// A Step Functions call failed.
    #[error("Step Functions {operation} failed: {code}: {reason}")]
    #[strum(serialize = "StepFunctionsError")]
    StepFunctions {
        operation: &'static str,
        code: String,
        reason: String,
        #[source]
        source: Option<Source>,
    },
    /// A CodePipeline call (a job answer) failed.
    #[error("CodePipeline {operation} failed: {code}: {reason}")]
    #[strum(serialize = "CodePipelineError")]
    CodePipeline {
        operation: &'static str,
        code: String,
        reason: String,
        #[source]
        source: Option<Source>,
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
    /// The backup holds no database with this name on this server.
    #[error("backup {backup_id} holds no backup of database {database} (it holds: {backed_up})")]
    DatabaseNotInBackup {
        backup_id: String,
        database: String,
        backed_up: String,
    },
    /// The run (or the event) asks for something its application is not allowed: a database
    /// secret the operator did not map to it, or a restore nobody authorised. Nothing was
    /// touched.
    #[error("not allowed: {0}")]
    NotAllowed(String),
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
    /// A function was about to call an AWS action its row of the permissions table
    /// (`core/src/aws/permissions.json`, which its role is checked against) does not list:
    /// its role would refuse it. Nothing was sent.
    #[error("function {function} may not call {action}: core/src/aws/permissions.json does not list it for that function, so its role does not grant it")]
    PermissionMissing { function: String, action: String },
}

impl Error {
    /// The stable name of this error, e.g. `ChecksumMismatch`.
    pub fn error_type(&self) -> &'static str {
        self.into()
    }

    /// Every name [`Error::error_type`] can return, for contract tests.
    pub const ALL_TYPES: &'static [&'static str] = <Error as strum::VariantNames>::VARIANTS;
}

/// Display wrapper printing `ErrorType: message`.
pub struct Named<'a>(pub &'a Error);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.error_type(), self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The names in the first column of the README's error table.
    fn readme_names() -> BTreeSet<String> {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("\n## Errors\n")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("the README has an Errors section");
        section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .filter_map(|l| l.split('|').nth(1))
            .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_string))
            .collect()
    }

    #[test]
    fn the_readme_names_every_error_and_no_other() {
        let declared: BTreeSet<String> = Error::ALL_TYPES.iter().map(|s| s.to_string()).collect();
        let documented = readme_names();
        let missing: Vec<_> = declared.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&declared).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "README's error table lacks {missing:?} and names {unknown:?}, which no error has"
        );
    }

    #[test]
    fn each_name_is_its_variants_and_unique() {
        assert_eq!(
            Error::InvalidInput(String::new()).error_type(),
            "InvalidInput"
        );
        let storage = Error::Storage {
            operation: "GetObject",
            bucket: String::new(),
            key: String::new(),
            reason: String::new(),
            source: None,
        };
        assert_eq!(storage.error_type(), "StorageError");
        let names: BTreeSet<&str> = Error::ALL_TYPES.iter().copied().collect();
        assert_eq!(
            names.len(),
            Error::ALL_TYPES.len(),
            "a name is declared twice"
        );
        assert!(names.contains("DrillFailed") && names.contains("Ec2Error"));
    }
}
