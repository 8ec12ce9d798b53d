//! The run document: the input of one protected deploy (one state machine execution). It
//! names the application and version, the targets to back up (instances by id or tags,
//! databases by Secrets Manager secret or, locally, by the name of an environment variable
//! holding the URL; never a password), the deploy action, the checks and the policy.
//! [`RunDocument::from_json`] rejects anything missing or malformed as `InvalidInput`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::manifest::{check_segment, InstanceBackupMode};
use crate::model::poll::PollPolicy;

/// One protected deploy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunDocument {
    pub application: String,
    #[serde(default)]
    pub version: AppVersion,
    pub targets: Vec<Target>,
    #[serde(default)]
    pub deploy: Deploy,
    #[serde(default)]
    pub checks: Checks,
    #[serde(default)]
    pub policy: Policy,
}

/// What is being deployed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppVersion {
    /// The commit (or version) being deployed.
    #[serde(default)]
    pub commit: Option<String>,
    /// The CodePipeline execution that runs this deploy, when one does.
    #[serde(default)]
    pub pipeline_execution_id: Option<String>,
}

/// One thing to back up before the deploy and restore after a failed one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// EC2 instances, by id or by tags (every tag must match).
    Instance {
        #[serde(default)]
        instance_id: Option<String>,
        #[serde(default)]
        tags: BTreeMap<String, String>,
        #[serde(default = "default_instance_mode")]
        mode: InstanceBackupMode,
        #[serde(default = "default_instance_restore")]
        restore_mode: InstanceRestoreMode,
    },
    /// A PostgreSQL database.
    Database {
        /// A Secrets Manager secret in the RDS shape.
        #[serde(default)]
        secret_id: Option<String>,
        /// Local use: the environment variable holding the connection URL.
        #[serde(default)]
        url_env: Option<String>,
        /// Overrides the secret's or URL's database name.
        #[serde(default)]
        dbname: Option<String>,
        /// libpq `sslmode` for a secret's server, at least as strict as the operator's
        /// (`DatabaseSslMode`); a URL carries its own in its query.
        #[serde(default)]
        sslmode: Option<String>,
    },
}

fn default_instance_mode() -> InstanceBackupMode {
    InstanceBackupMode::Snapshots
}

fn default_instance_restore() -> InstanceRestoreMode {
    InstanceRestoreMode::SwapVolumes
}

/// The deploy the state machine runs between the backup and the checks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Deploy {
    /// Invoke a Lambda function; a function error is a deploy failure.
    Lambda {
        function_name: String,
        #[serde(default)]
        payload: serde_json::Value,
    },
    /// Run a CodeBuild project and wait for it.
    Codebuild { project_name: String },
    /// Nothing: the pipeline deploys elsewhere; only the checks run.
    #[default]
    None,
}

/// The checks after the deploy (and again after a restore).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    #[serde(default)]
    pub http: Vec<HttpCheck>,
    #[serde(default)]
    pub sql: Vec<SqlCheck>,
    /// CloudWatch alarms, none of which may be in ALARM.
    #[serde(default)]
    pub alarms: Vec<AlarmCheck>,
    /// A check passes only after this many passes in a row.
    #[serde(default = "one")]
    pub consecutive: u32,
    /// The passes must span at least this long.
    #[serde(default)]
    pub bake_seconds: u64,
    /// The wait between rounds.
    #[serde(default = "five")]
    pub interval_seconds: u64,
}

/// Where the deployment checks stand between invocations of verify: the bake runs as rounds
/// the state machine drives (VerifyDeploy, then a Wait of `next_wait_seconds` while
/// `status` is `PENDING`), so a bake of any length fits functions that stop at their deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecksProgress {
    pub status: ChecksStatus,
    /// Rounds passed in a row so far.
    pub rounds: u32,
    /// When the first round began (the bake is wall-clock time since then).
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: time::OffsetDateTime,
    /// The wait before the next round (0 once passed).
    pub next_wait_seconds: u64,
    pub summary: String,
}

/// Whether the checks still have rounds to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChecksStatus {
    Pending,
    Passed,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            http: Vec::new(),
            sql: Vec::new(),
            alarms: Vec::new(),
            consecutive: 1,
            bake_seconds: 0,
            interval_seconds: 5,
        }
    }
}

fn one() -> u32 {
    1
}

fn five() -> u64 {
    5
}

fn two_hundred() -> u16 {
    200
}

/// An HTTP GET that must answer `expect_status` and contain `body_contains`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    pub url: String,
    #[serde(default = "two_hundred")]
    pub expect_status: u16,
    #[serde(default)]
    pub body_contains: Option<String>,
}

/// A query whose first column of the first row must equal `expect` (as text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlCheck {
    /// Which database target (its dbname); the only one when omitted.
    #[serde(default)]
    pub database: Option<String>,
    pub query: String,
    pub expect: String,
}

/// CloudWatch alarms that must not be in ALARM: one alarm by `name`, or every alarm whose name
/// starts with `name_prefix` (metric and composite alarms alike). `OK` and
/// `INSUFFICIENT_DATA` pass; an alarm that does not exist, or a prefix that matches none, fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
}

impl AlarmCheck {
    /// What the check selects, for messages: `alarm shop-5xx`, `alarms shop-*`.
    pub fn label(&self) -> String {
        match (&self.name, &self.name_prefix) {
            (Some(n), _) => format!("alarm {n}"),
            (None, Some(p)) => format!("alarms {p}*"),
            (None, None) => "no alarm".to_string(),
        }
    }
}

/// How an instance is put back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceRestoreMode {
    /// Stop, swap every backed-up volume for one created from its snapshot, start.
    SwapVolumes,
    /// A replace-root-volume task from the root snapshot or the image.
    ReplaceRoot,
}

impl std::fmt::Display for InstanceRestoreMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InstanceRestoreMode::SwapVolumes => "swap-volumes",
            InstanceRestoreMode::ReplaceRoot => "replace-root",
        })
    }
}

impl std::str::FromStr for InstanceRestoreMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "swap-volumes" => Ok(InstanceRestoreMode::SwapVolumes),
            "replace-root" => Ok(InstanceRestoreMode::ReplaceRoot),
            other => Err(Error::InvalidInput(format!(
                "instance restore mode {other:?} is not one of swap-volumes, replace-root"
            ))),
        }
    }
}

/// When the deploy may go ahead, and how polls wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitFor {
    /// Every snapshot completed (the default).
    Completed,
    /// Snapshots started: they are point-in-time when created, so the deploy may go ahead;
    /// a restore then waits for them to complete first.
    Started,
}

/// The policy of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    #[serde(default = "completed")]
    pub wait_for: WaitFor,
    #[serde(default, flatten)]
    pub poll: PollPolicy,
    /// VerifyBackup also restores each database's dump into a scratch database on its own
    /// server, compares the row counts with the manifest and drops it, before the deploy runs.
    /// Off by default: it takes as long as a restore, within VerifyBackup's own time.
    #[serde(default)]
    pub restore_test: bool,
}

fn completed() -> WaitFor {
    WaitFor::Completed
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            wait_for: WaitFor::Completed,
            poll: PollPolicy::default(),
            restore_test: false,
        }
    }
}

impl RunDocument {
    /// Parses and checks a run document; anything missing or malformed is `InvalidInput`.
    pub fn from_json(text: &str) -> Result<RunDocument, Error> {
        let doc: RunDocument = serde_json::from_str(text)
            .map_err(|e| Error::InvalidInput(format!("run document: {e}")))?;
        doc.check()?;
        Ok(doc)
    }

    /// Checks what serde cannot, and keeps the document within the bounds that keep every
    /// state's payload under Step Functions' 256 KiB (see [`MAX_RUN_DOCUMENT`]).
    pub fn check(&self) -> Result<(), Error> {
        check_segment("application", &self.application)?;
        if self.targets.is_empty() {
            return Err(Error::InvalidInput(
                "run document: targets must name at least one instance or database".to_string(),
            ));
        }
        if self.targets.len() > MAX_TARGETS {
            return Err(Error::InvalidInput(format!(
                "run document: {} targets; at most {MAX_TARGETS} (split the application into \
                 several runs)",
                self.targets.len()
            )));
        }
        let size = serde_json::to_vec(self).map_or(usize::MAX, |v| v.len());
        if size > MAX_RUN_DOCUMENT {
            return Err(Error::InvalidInput(format!(
                "run document: {size} bytes as JSON; at most {MAX_RUN_DOCUMENT} (it travels with \
                 every state of the execution)"
            )));
        }
        for (n, t) in self.targets.iter().enumerate() {
            t.check().map_err(|e| match e {
                Error::InvalidInput(m) => Error::InvalidInput(format!("targets[{n}]: {m}")),
                other => other,
            })?;
        }
        if let Deploy::Lambda { function_name, .. } = &self.deploy {
            if function_name.trim().is_empty() {
                return Err(Error::InvalidInput(
                    "deploy.function_name must not be empty".to_string(),
                ));
            }
        }
        if let Deploy::Codebuild { project_name } = &self.deploy {
            if project_name.trim().is_empty() {
                return Err(Error::InvalidInput(
                    "deploy.project_name must not be empty".to_string(),
                ));
            }
        }
        for (n, a) in self.checks.alarms.iter().enumerate() {
            let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
            if given(&a.name) == given(&a.name_prefix) {
                return Err(Error::InvalidInput(format!(
                    "checks.alarms[{n}]: give exactly one of name, name_prefix (not empty)"
                )));
            }
        }
        if self.checks.consecutive == 0 {
            return Err(Error::InvalidInput(
                "checks.consecutive must be at least 1".to_string(),
            ));
        }
        let p = self.policy.poll;
        if p.first_wait_seconds == 0 || p.max_wait_seconds < p.first_wait_seconds {
            return Err(Error::InvalidInput(
                "policy: first_wait_seconds must be at least 1 and at most max_wait_seconds"
                    .to_string(),
            ));
        }
        Ok(())
    }
}

/// The most targets a run may protect: the restore path holds one report per target, each
/// at most a bounded error (`MAX_ERROR_MESSAGE` of the functions, 4 KiB) or a finished job.
pub const MAX_TARGETS: usize = 16;

/// The most bytes of a run document as JSON. It travels with every state; with the restore
/// path's reports (at most [`MAX_TARGETS`] of about 8 KiB) and the bounded cause, the largest
/// state stays far under Step Functions' 256 KiB, so `States.DataLimitExceeded` (which no Catch
/// can see) cannot end an execution.
pub const MAX_RUN_DOCUMENT: usize = 32 * 1024;

impl Target {
    /// Whether this is a database target.
    pub fn is_database(&self) -> bool {
        matches!(self, Target::Database { .. })
    }

    fn check(&self) -> Result<(), Error> {
        match self {
            Target::Instance {
                instance_id, tags, ..
            } => {
                if instance_id.is_none() && tags.is_empty() {
                    return Err(Error::InvalidInput(
                        "an instance target needs instance_id or tags".to_string(),
                    ));
                }
                Ok(())
            }
            Target::Database {
                secret_id,
                url_env,
                sslmode,
                ..
            } => match (secret_id, url_env, sslmode) {
                (_, _, Some(mode)) if !SSLMODES.contains(&mode.as_str()) => {
                    Err(Error::InvalidInput(format!(
                        "sslmode {mode:?}: use one of {}",
                        SSLMODES.join(", ")
                    )))
                }
                (None, Some(_), Some(_)) => Err(Error::InvalidInput(
                    "sslmode is for a secret's server; a url_env URL carries its own (?sslmode=)"
                        .to_string(),
                )),
                (Some(_), None, _) | (None, Some(_), _) => Ok(()),
                _ => Err(Error::InvalidInput(
                    "a database target needs exactly one of secret_id, url_env".to_string(),
                )),
            },
        }
    }

    /// A short name for messages: `instance i-…`, `database shop`.
    pub fn label(&self) -> String {
        match self {
            Target::Instance {
                instance_id, tags, ..
            } => match instance_id {
                Some(id) => format!("instance {id}"),
                None => format!(
                    "instances tagged {}",
                    tags.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            },
            Target::Database {
                secret_id,
                url_env,
                dbname,
                ..
            } => format!(
                "database {}",
                dbname
                    .as_deref()
                    .or(secret_id.as_deref())
                    .or(url_env.as_deref())
                    .unwrap_or("?")
            ),
        }
    }
}

/// libpq's `sslmode` values, weakest first.
pub const SSLMODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// How strict `sslmode` is: its place in [`SSLMODES`] (`None` for no such mode).
pub fn strictness(sslmode: &str) -> Option<usize> {
    SSLMODES.iter().position(|m| *m == sslmode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_document_too_large_to_travel_through_every_state_is_refused() {
        let target = json!({"type": "database", "url_env": "SHOP_DB_URL"});
        let with = |targets: Vec<serde_json::Value>, payload: &str| {
            RunDocument::from_json(
                &json!({"application": "shop", "targets": targets,
                        "deploy": {"type": "lambda", "function_name": "f",
                                   "payload": {"blob": payload}}})
                .to_string(),
            )
        };
        assert!(with(vec![target.clone(); MAX_TARGETS], "").is_ok());
        let e = with(vec![target.clone(); MAX_TARGETS + 1], "").unwrap_err();
        assert_eq!(e.error_type(), "InvalidInput");
        assert!(e.to_string().contains("at most 16"), "{e}");
        let e = with(vec![target], &"x".repeat(MAX_RUN_DOCUMENT)).unwrap_err();
        assert!(e.to_string().contains("bytes as JSON"), "{e}");
    }

    #[test]
    fn a_minimal_document_gets_the_defaults_and_bad_ones_are_invalid_input() {
        let doc = RunDocument::from_json(
            &json!({
                "application": "shop",
                "targets": [{"type": "database", "url_env": "SHOP_DB_URL"}]
            })
            .to_string(),
        )
        .unwrap();
        assert_eq!(doc.deploy, Deploy::None);
        assert_eq!(doc.policy.wait_for, WaitFor::Completed);
        assert_eq!(doc.policy.poll.first_wait_seconds, 15);
        assert_eq!(doc.checks.consecutive, 1);
        for bad in [
            json!({"targets": [{"type": "database", "url_env": "X"}]}),
            json!({"application": "shop", "targets": []}),
            json!({"application": "shop", "targets": [{"type": "instance"}]}),
            json!({"application": "shop", "targets": [{"type": "database"}]}),
            json!({"application": "shop", "targets": [{"type": "disk", "id": "x"}]}),
            json!({"application": "a/b", "targets": [{"type": "database", "url_env": "X"}]}),
            json!({"application": "shop", "targets": [{"type": "database", "url_env": "X"}],
                   "deploy": {"type": "lambda"}}),
            json!({"application": "shop", "targets": [{"type": "database", "url_env": "X"}],
                   "surprise": true}),
            json!({"application": "shop",
                   "targets": [{"type": "database", "secret_id": "s", "sslmode": "sometimes"}]}),
            json!({"application": "shop",
                   "targets": [{"type": "database", "url_env": "X", "sslmode": "verify-full"}]}),
        ] {
            let err = RunDocument::from_json(&bad.to_string()).unwrap_err();
            assert_eq!(err.error_type(), "InvalidInput", "{bad}: {err}");
        }
    }
}
