//! verify, mode `backup` (VerifyBackup): the backup's artifacts are what its manifest says:
//! every dump re-read (size, SHA-256, archive listing), every snapshot present and not failed;
//! with the run's `policy.restore_test`, every dump also restored into a scratch database on
//! its own server and its row counts compared, before the deploy runs.
//! Given the run document, it is recorded in the manifest once the backup passes, so guard
//! mode and restore drills know the run's targets and checks, and the backup is recorded as
//! its pipeline execution's (the catalog's index), so guard finds it with one read.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::aws::events::{EventDetail, Outcome};
use crate::context::Context;
use crate::db::verify::verify_databases;
use crate::error::Error;
use crate::instance::backup::poll_instance_backup;
use crate::model::job::InstanceJob;
use crate::model::manifest::{BackupState, InstanceBackupMode};
use crate::model::poll::{JobStatus, PollPolicy};
use crate::model::run::RunDocument;
use crate::progress::Quiet;
use crate::store::download::DownloadTuning;
use crate::tasks::verify::VerifyReport;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupTask {
    pub backup_id: String,
    pub application: String,
    #[serde(default)]
    pub run: Option<RunDocument>,
}

pub async fn handle(ctx: &Context, task: BackupTask) -> Result<VerifyReport, Error> {
    let report = verify_backup(ctx, &task.application, &task.backup_id, task.run.as_ref()).await?;
    if let Some(run) = task.run {
        ctx.catalog()
            .amend_manifest(&task.application, &task.backup_id, |m| {
                m.run = Some(run.clone())
            })
            .await?;
        // Once the manifest names the run: guard finds this backup by its pipeline execution.
        if let Some(execution) = &run.version.pipeline_execution_id {
            ctx.catalog()
                .record_pipeline_execution(execution, &task.application, &task.backup_id)
                .await?;
        }
    }
    ctx.events()
        .publish(
            Outcome::BackupCompleted,
            &EventDetail::new(&report.summary, &task.application, &task.backup_id),
        )
        .await;
    Ok(report)
}

async fn verify_backup(
    ctx: &Context,
    application: &str,
    backup_id: &str,
    run: Option<&RunDocument>,
) -> Result<VerifyReport, Error> {
    let manifest = ctx.catalog().manifest(application, backup_id).await?;
    if manifest.state == BackupState::Failed {
        return Err(Error::BackupNotUsable {
            backup_id: backup_id.to_string(),
            state: format!(
                "failed: {}",
                manifest.error.as_deref().unwrap_or("no reason recorded")
            ),
        });
    }
    let mut lines: Vec<String> = Vec::new();
    match run.filter(|r| r.policy.restore_test) {
        None => {
            let report = verify_databases(
                ctx.catalog(),
                &ctx.tools,
                &manifest,
                None,
                DownloadTuning::default(),
                &Quiet,
            )
            .await?;
            lines.extend(
                report
                    .databases
                    .iter()
                    .map(|d| format!("{}: {} bytes, SHA-256 matches", d.database, d.bytes)),
            );
        }
        Some(run) => {
            // Each database restored on its own server, with the run's own login for it.
            for target in run.targets.iter().filter(|t| t.is_database()) {
                let db = ctx.database(application, target).await?;
                let entry = manifest.database(&db.server(), &db.dbname)?;
                let mut one = manifest.clone();
                one.databases = vec![entry.clone()];
                let report = verify_databases(
                    ctx.catalog(),
                    &ctx.tools,
                    &one,
                    Some(&db),
                    DownloadTuning::default(),
                    &Quiet,
                )
                .await?;
                lines.extend(report.databases.iter().map(|d| {
                    format!(
                        "{}: {} bytes, SHA-256 matches, restore test: {} tables match",
                        entry.label(),
                        d.bytes,
                        d.restore_test_tables.unwrap_or(0)
                    )
                }));
            }
        }
    }
    let now = OffsetDateTime::now_utc();
    for entry in &manifest.instances {
        let job = InstanceJob::of(backup_id, application, entry, manifest.started_at);
        let status = poll_instance_backup(ctx.ec2(), &job, &PollPolicy::default(), now).await?;
        if let JobStatus::Failed { reason } = status {
            return Err(Error::InstanceBackupFailed {
                backup_id: backup_id.to_string(),
                instance_id: entry.instance_id.clone(),
                reason,
            });
        }
        lines.push(format!(
            "{}: {} snapshot(s) {}",
            entry.instance_id,
            entry.volumes.len(),
            match (entry.state, entry.mode) {
                (BackupState::Completed, _) => "completed",
                (_, InstanceBackupMode::Image) => "in a pending image",
                _ => "started",
            }
        ));
    }
    Ok(VerifyReport::summary(lines.join("; ")))
}
