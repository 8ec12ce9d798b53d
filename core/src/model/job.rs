//! What the state machine's tasks pass each other: one target's task, the job a poll loop
//! follows and its report, what each restore iteration reports, the error Step Functions
//! caught, and the cause a `DeployFailed` execution ends with. Pure data: no I/O.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::Error;
use crate::model::manifest::{check_segment, InstanceBackup, InstanceBackupMode};
use crate::model::poll::PollPolicy;
use crate::model::run::{AppVersion, InstanceRestoreMode, Policy, Target, WaitFor};

/// The input of start-backup and restore: one target of the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetTask {
    pub target: Target,
    pub backup_id: String,
    pub application: String,
    #[serde(default)]
    pub version: AppVersion,
    #[serde(default)]
    pub policy: Policy,
}

/// A job the poll loop follows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Snapshot sets or images of instances.
    InstanceBackup {
        jobs: Vec<InstanceJob>,
        wait_for: WaitFor,
        poll: PollPolicy,
    },
    /// A database dump; finished when start-backup returns.
    DatabaseBackup {
        backup_id: String,
        database: String,
        /// `host:port`: with the name, which database.
        #[serde(default)]
        server: String,
    },
    /// Restores of instances, advanced one step per poll.
    InstanceRestore {
        backup_id: String,
        application: String,
        instance_ids: Vec<String>,
        restore_id: String,
        mode: InstanceRestoreMode,
        #[serde(with = "time::serde::rfc3339")]
        started_at: OffsetDateTime,
        poll: PollPolicy,
    },
    /// A database restore; finished when restore returns.
    DatabaseRestore {
        database: String,
        /// `host:port`: with the name, which database.
        #[serde(default)]
        server: String,
        failed_state_database: Option<String>,
    },
}

/// What start-backup, poll-job and restore return: the job and where it stands. The state
/// machine waits `next_wait_seconds` and polls again while `status` is `PENDING`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    pub job: Job,
    pub status: JobState,
    pub next_wait_seconds: u64,
    pub progress: u8,
    pub detail: String,
}

/// Where a job stands, as the state machine's choices read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Not done: wait `next_wait_seconds` and poll again.
    Pending,
    /// Snapshots started, and the policy (`wait_for: started`) waits for no more.
    Started,
    /// Done.
    Completed,
}

impl JobReport {
    /// A finished job.
    pub fn completed(job: Job, detail: String) -> JobReport {
        JobReport {
            job,
            status: JobState::Completed,
            next_wait_seconds: 0,
            progress: 100,
            detail,
        }
    }
}

/// A started instance backup: what poll-job needs, ids only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceJob {
    pub backup_id: String,
    pub application: String,
    pub instance_id: String,
    pub mode: InstanceBackupMode,
    #[serde(default)]
    pub snapshot_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

impl Job {
    /// The ids a job carries between invocations, checked before any reaches EC2, a key or
    /// a filter: application and backup ids as key segments, EC2 ids of the form AWS gives.
    pub fn check(&self) -> Result<(), Error> {
        let ec2 = |kind: &str, id: &str| {
            crate::model::manifest::check_ec2_id(kind, id).map_err(Error::InvalidInput)
        };
        match self {
            Job::InstanceBackup { jobs, .. } => {
                for j in jobs {
                    check_segment("application", &j.application)?;
                    check_segment("backup id", &j.backup_id)?;
                    ec2("i", &j.instance_id)?;
                    for s in &j.snapshot_ids {
                        ec2("snap", s)?;
                    }
                    if let Some(image) = &j.image_id {
                        ec2("ami", image)?;
                    }
                }
            }
            Job::InstanceRestore {
                backup_id,
                application,
                instance_ids,
                restore_id,
                ..
            } => {
                check_segment("application", application)?;
                check_segment("backup id", backup_id)?;
                check_segment("restore id", restore_id)?;
                for i in instance_ids {
                    ec2("i", i)?;
                }
            }
            Job::DatabaseBackup { backup_id, .. } => check_segment("backup id", backup_id)?,
            Job::DatabaseRestore { .. } => {}
        }
        Ok(())
    }
}

impl InstanceJob {
    pub fn of(
        backup_id: &str,
        application: &str,
        entry: &InstanceBackup,
        at: OffsetDateTime,
    ) -> Self {
        InstanceJob {
            backup_id: backup_id.to_string(),
            application: application.to_string(),
            instance_id: entry.instance_id.clone(),
            mode: entry.mode,
            snapshot_ids: entry.snapshot_ids(),
            image_id: entry.image_id.clone(),
            started_at: at,
        }
    }
}

/// What one iteration of the restore Map reports: its target put back, or the error that
/// stopped it. One target's failure does not stop the others; verify (mode `restore`) sees
/// them all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TargetRestore {
    Completed {
        detail: String,
        /// The finished job: for a database, where its failed state is kept.
        #[serde(default)]
        job: Option<Job>,
    },
    /// `error` and `cause` as Step Functions caught them (`cause` is the function's
    /// `{errorType, errorMessage}` JSON).
    Failed { error: String, cause: String },
}

impl TargetRestore {
    /// `Error: message` of a failed restore, the message taken out of the cause's JSON.
    pub fn failure(&self) -> Option<String> {
        let TargetRestore::Failed { error, cause } = self else {
            return None;
        };
        let message = match FunctionError::parse(cause) {
            Some(FunctionError {
                error_message: Some(m),
                ..
            }) => m,
            _ => cause.clone(),
        };
        Some(format!("{error}: {message}"))
    }
}

/// The cause a `DeployFailed` execution ends with (as JSON): the original failure, the backup,
/// what was restored and the checks after the restore. Verify (mode `restore`) writes it; the
/// incident report and the pipeline worker's summary read it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployFailedCause {
    pub error: String,
    pub cause: String,
    pub backup_id: String,
    #[serde(default)]
    pub restored: Vec<String>,
    #[serde(default)]
    pub checks_after_restore: String,
}

/// The most characters of a Fail state's cause (and of any error's cause in an execution).
/// <https://docs.aws.amazon.com/step-functions/latest/apireference/API_DescribeExecution.html>
pub const MAX_CAUSE: usize = 32_768;

/// `text` cut to at most `limit` characters, saying how much was cut.
pub fn bounded(text: &str, limit: usize) -> String {
    let count = text.chars().count();
    if count <= limit {
        return text.to_string();
    }
    let note = format!(" … (cut from {count} characters)");
    let note_len = note.chars().count();
    if limit < 2 * note_len {
        return text.chars().take(limit).collect();
    }
    let mut out: String = text.chars().take(limit - note_len).collect();
    out.push_str(&note);
    out
}

/// `text` cut (as [`bounded`] does) until it takes at most `limit` characters as a JSON
/// string, escapes included: for an error message that Step Functions carries as JSON inside
/// a cause.
pub fn bounded_for_json(text: &str, limit: usize) -> String {
    let escaped = |t: &str| serde_json::to_string(t).map_or(usize::MAX, |j| j.chars().count());
    let mut out = text.to_string();
    let mut keep = out.chars().count();
    while escaped(&out) > limit && keep > 0 {
        keep /= 2;
        out = bounded(text, keep);
    }
    out
}

impl DeployFailedCause {
    /// The cause as JSON, at most [`MAX_CAUSE`] characters however long (or however full of
    /// characters JSON escapes) the original failure's cause, the restored list or the checks
    /// are: the longest part is halved until the whole fits.
    pub fn to_bounded_json(&self) -> Result<String, serde_json::Error> {
        let chars = |s: &str| s.chars().count();
        // What each part may keep, in characters (the restored list: in entries).
        let mut cause = chars(&self.cause);
        let mut checks = chars(&self.checks_after_restore);
        let mut restored = self.restored.len();
        let mut error = chars(&self.error);
        let mut backup_id = chars(&self.backup_id);
        loop {
            let mut c = DeployFailedCause {
                error: bounded(&self.error, error),
                cause: bounded(&self.cause, cause),
                backup_id: bounded(&self.backup_id, backup_id),
                restored: self
                    .restored
                    .iter()
                    .take(restored)
                    .map(|r| bounded(r, 256))
                    .collect(),
                checks_after_restore: bounded(&self.checks_after_restore, checks),
            };
            if restored < self.restored.len() {
                c.restored
                    .push(format!("… and {} more", self.restored.len() - restored));
            }
            let text = serde_json::to_string(&c)?;
            if text.chars().count() <= MAX_CAUSE {
                return Ok(text);
            }
            let listed: usize = c.restored.iter().map(|r| chars(r) + 3).sum();
            let parts = [cause, checks, listed, error, backup_id];
            match (0..parts.len()).max_by_key(|i| parts[*i]).unwrap_or(0) {
                0 => cause /= 2,
                1 => checks /= 2,
                2 => restored /= 2,
                3 => error /= 2,
                _ => backup_id /= 2,
            }
        }
    }

    /// Reads the cause text; `None` when it is not this shape.
    pub fn parse(text: &str) -> Option<DeployFailedCause> {
        serde_json::from_str(text).ok()
    }
}

/// An error as a Step Functions Catch hands it on (`ResultPath` of the caught error):
/// its name and its cause, which for a Lambda task is the function's
/// `{"errorType", "errorMessage"}` as JSON text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFailure {
    #[serde(rename = "Error", default)]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: String,
}

impl StepFailure {
    /// `Error: Cause`, at most `limit` characters, for a record kept in the catalog.
    pub fn summary(&self, limit: usize) -> String {
        format!("{}: {}", self.error, self.cause)
            .chars()
            .take(limit)
            .collect()
    }
}

/// A Lambda function's error as a caught cause carries it: `{"errorType", "errorMessage"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionError {
    #[serde(rename = "errorType", default)]
    pub error_type: Option<String>,
    #[serde(rename = "errorMessage", default)]
    pub error_message: Option<String>,
}

impl FunctionError {
    /// The cause read as a function error; `None` when it is not one.
    pub fn parse(cause: &str) -> Option<FunctionError> {
        serde_json::from_str(cause).ok()
    }
}

/// `errorType: errorMessage` of a function's `{errorType, errorMessage}` cause; else the text.
pub fn diagnostic_text(cause: &str) -> String {
    match FunctionError::parse(cause) {
        Some(FunctionError {
            error_type: Some(t),
            error_message: Some(m),
        }) => format!("{t}: {m}"),
        Some(FunctionError {
            error_type: None,
            error_message: Some(m),
        }) => m,
        _ => cause.to_string(),
    }
}

/// The name of the restore execution guard mode starts for a backup: `guard-<backup id>`,
/// within Step Functions' 80 characters (a longer id keeps its start and a hash of the whole).
pub fn guard_execution_name(backup_id: &str) -> String {
    let name = format!("guard-{backup_id}");
    if name.len() <= 80 {
        return name;
    }
    let hash = hex::encode(Sha256::digest(backup_id.as_bytes()));
    let head: String = backup_id.chars().take(56).collect();
    format!("guard-{head}-{}", &hash[..16])
}

/// A restore guard asks for: the backup (by application and id) and the failure that calls
/// for it. Guard records it in the catalog under its execution's name before starting the
/// restore path, and the state machine's GuardRestore restores only what such a record
/// authorises, from the run document the backup recorded: the execution's input alone
/// authorises nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreOf {
    pub application: String,
    pub backup_id: String,
    pub failure: StepFailure,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_failed_cause_fits_step_functions_whatever_it_carries() {
        let huge = DeployFailedCause {
            error: "DeployFailed".into(),
            // Quotes and control characters double or sextuple in JSON.
            cause: "\"\u{1}".repeat(40_000),
            backup_id: "codepipeline-0f3c2a4e-9b1d-4c8e-a6f2-7d5e9b3c1a20".into(),
            restored: (0..5_000).map(|i| format!("database app{i}")).collect(),
            checks_after_restore: "x".repeat(50_000),
        };
        let text = huge.to_bounded_json().unwrap();
        assert!(text.chars().count() <= MAX_CAUSE, "{}", text.len());
        let back = DeployFailedCause::parse(&text).unwrap();
        assert_eq!(back.backup_id, huge.backup_id);
        assert!(
            back.cause.contains("cut from 80000 characters"),
            "{}",
            &back.cause[..40]
        );
        assert!(back.restored.last().unwrap().contains("more"));

        let small = DeployFailedCause {
            error: "DeployFailed".into(),
            cause: "boom".into(),
            backup_id: "b".into(),
            restored: vec!["database app".into()],
            checks_after_restore: "ok".into(),
        };
        assert_eq!(
            small.to_bounded_json().unwrap(),
            serde_json::to_string(&small).unwrap()
        );
    }

    #[test]
    fn bounded_keeps_short_texts_and_says_what_it_cut() {
        assert_eq!(bounded("abc", 3), "abc");
        let cut = bounded(&"é".repeat(1000), 100);
        assert_eq!(cut.chars().count(), 100);
        assert!(cut.ends_with("(cut from 1000 characters)"), "{cut}");
        assert_eq!(bounded("abcdef", 2), "ab");
        let quotes = "\"".repeat(10_000);
        let cut = bounded_for_json(&quotes, 4096);
        assert!(serde_json::to_string(&cut).unwrap().len() <= 4096);
        assert!(cut.len() > 1000, "{}", cut.len());
    }
}
