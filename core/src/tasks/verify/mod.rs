//! verify: the state machine's checks and records, one mode per state that calls it, one file
//! per mode: the run document before anything is touched ([`run`]), the backup's artifacts
//! ([`backup`]), a failed backup recorded as failed ([`backup_failed`]), the deployment checks
//! ([`deployment`]), the restored targets and the checks after the restore ([`restore`]), and
//! the incident report of a failed deploy ([`incident`]).

pub mod authorize_restore;
pub mod backup;
pub mod backup_failed;
pub mod deployment;
pub mod incident;
pub mod restore;
pub mod run;

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::Error;
use crate::model::run::{ChecksProgress, RunDocument};

/// The input of verify, by mode (`"mode": "run"`, `"backup"`, …).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum VerifyTask {
    Run(run::RunTask),
    AuthorizeRestore(authorize_restore::AuthorizeRestoreTask),
    Backup(backup::BackupTask),
    BackupFailed(backup_failed::BackupFailedTask),
    Deployment(deployment::DeploymentTask),
    Incident(incident::IncidentTask),
    Restore(restore::RestoreTask),
}

/// verify's answer: the run document with its defaults filled in (mode `run`), where the
/// checks stand (mode `deployment`), else a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VerifyOutput {
    Run(Box<RunDocument>),
    Restore(Box<authorize_restore::AuthorizedRestore>),
    Checks(ChecksProgress),
    Report(VerifyReport),
}

/// What a mode found or did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub summary: String,
    /// Mode `restore`: the JSON the execution's `DeployFailed` carries as its cause; mode
    /// `backup_failed`: the failure recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

impl VerifyReport {
    pub fn summary(summary: impl Into<String>) -> VerifyReport {
        VerifyReport {
            summary: summary.into(),
            cause: None,
        }
    }
}

/// Runs the mode the input names.
pub async fn handle(ctx: &Context, task: VerifyTask) -> Result<VerifyOutput, Error> {
    let report = match task {
        VerifyTask::Run(t) => {
            return run::handle(ctx, t)
                .await
                .map(|doc| VerifyOutput::Run(Box::new(doc)))
        }
        VerifyTask::AuthorizeRestore(t) => {
            return authorize_restore::handle(ctx, t)
                .await
                .map(|r| VerifyOutput::Restore(Box::new(r)))
        }
        VerifyTask::Backup(t) => backup::handle(ctx, t).await?,
        VerifyTask::BackupFailed(t) => backup_failed::handle(ctx, t).await?,
        VerifyTask::Deployment(t) => {
            return deployment::handle(ctx, t).await.map(VerifyOutput::Checks)
        }
        VerifyTask::Incident(t) => incident::handle(ctx, t).await?,
        VerifyTask::Restore(t) => restore::handle(ctx, t).await?,
    };
    Ok(VerifyOutput::Report(report))
}
