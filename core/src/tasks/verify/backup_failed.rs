//! verify, mode `backup_failed` (RecordBackupFailure): a failed backup is recorded as failed
//! in its manifest, written even when no part wrote one yet, so the parts that did finish (or
//! a part still finishing, which merges into a failed manifest) are never taken for a good
//! backup. Returns the failure's cause.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::aws::events::{EventDetail, Outcome};
use crate::context::Context;
use crate::error::Error;
use crate::model::job::StepFailure;
use crate::model::manifest::{BackupState, Manifest, Purpose, MANIFEST_FORMAT};
use crate::tasks::verify::VerifyReport;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFailedTask {
    pub backup_id: String,
    pub application: String,
    /// The error that stopped the backup, as the state machine caught it.
    #[serde(default)]
    pub failure: StepFailure,
}

pub async fn handle(ctx: &Context, task: BackupFailedTask) -> Result<VerifyReport, Error> {
    let (application, backup_id) = (&task.application, &task.backup_id);
    let reason = task.failure.summary(2000);
    ctx.catalog()
        .update_manifest(application, backup_id, |current| {
            let now = OffsetDateTime::now_utc();
            let mut m = current.unwrap_or_else(|| Manifest {
                format_version: MANIFEST_FORMAT,
                backup_id: backup_id.to_string(),
                application: application.to_string(),
                app_version: None,
                purpose: Purpose::Backup,
                state: BackupState::Failed,
                started_at: now,
                finished_at: now,
                databases: Vec::new(),
                instances: Vec::new(),
                error: None,
                deployed: None,
                run: None,
            });
            m.state = BackupState::Failed;
            m.error.get_or_insert_with(|| reason.clone());
            m.finished_at = now;
            Ok(m)
        })
        .await?;
    ctx.events()
        .publish(
            Outcome::BackupFailed,
            &EventDetail::new(&reason, application, backup_id),
        )
        .await;
    Ok(VerifyReport {
        summary: format!("backup {backup_id} marked failed"),
        cause: Some(reason),
    })
}
