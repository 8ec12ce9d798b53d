//! Restore drills: proof, on a schedule, that the latest good backup of each application
//! restores. Each database is streamed into a scratch database on its own server (size and
//! SHA-256 checked on the way, then every table's row count against the manifest); each volume
//! snapshot becomes a new, unattached volume, checked to come from that snapshot. Whatever
//! the outcome, everything the drill created is removed, and the drill report
//! (`<prefix>/<application>/<backup-id>/drill-<time>.json`) says what was checked, what failed
//! and what was cleaned up. `DrillPassed` or `DrillFailed` is published per application.

use std::time::Duration;

use aws_sdk_ec2::types::{ResourceType, VolumeState, VolumeType};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::aws::ec2::{client_token, tag_spec};
use crate::aws::events::{EventDetail, Outcome};
use crate::context::Context;
use crate::db::restore::timestamp;
use crate::db::verify::verify_databases;
use crate::error::{Error, Named};
use crate::model::manifest::{
    check_segment, BackupState, DatabaseBackup, Manifest, Purpose, VolumeBackup,
};
use crate::progress::Quiet;
use crate::store::download::DownloadTuning;
use crate::tasks::ScheduledEvent;

pub use crate::aws::ec2::{TAG_DRILL, TAG_DRILL_OF};

/// What a volume's drill needs after its wait, at most: the volume created, described, and
/// deleted again, each with the retry layer's worst case.
const VOLUME_RESERVE: Duration = Duration::from_secs(120);
/// The drill report's format.
pub const DRILL_FORMAT: u32 = 1;

/// What to drill: the drill schedule's settings, or the CLI's arguments.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillTask {
    /// Drill only this application; every application when absent.
    #[serde(default)]
    pub application: Option<String>,
    /// How long a new volume may take to become available.
    #[serde(default = "default_volume_wait")]
    pub volume_wait_seconds: u64,
}

fn default_volume_wait() -> u64 {
    crate::context::DEFAULT_DRILL_VOLUME_WAIT_SECONDS
}

/// One database restored into scratch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatabaseDrill {
    pub database: String,
    pub bytes: u64,
    /// Tables restored whose row counts match the manifest, when the restore passed.
    pub tables_matched: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One snapshot turned into a volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VolumeDrill {
    pub instance_id: String,
    pub device: String,
    pub snapshot_id: String,
    /// The scratch volume, when it was created (it is deleted again).
    pub volume_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one drill of one backup found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub format_version: u32,
    pub drill_id: String,
    pub application: String,
    pub backup_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    pub passed: bool,
    pub databases: Vec<DatabaseDrill>,
    pub volumes: Vec<VolumeDrill>,
    /// What was removed afterwards.
    pub cleaned_up: Vec<String>,
    /// What could not be removed (a drill that leaves anything behind fails).
    pub cleanup_errors: Vec<String>,
    /// Manifests of the application that could not be believed, left out of the drill.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests_skipped: Vec<String>,
    /// Why the drill could not run at all, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where the report is kept.
    pub report_key: String,
}

impl DrillReport {
    /// A drill of `backup_id` (empty when there is no backup to drill) starting now, with
    /// nothing checked yet.
    fn start(drill_id: &str, application: &str, backup_id: &str) -> DrillReport {
        let now = OffsetDateTime::now_utc();
        DrillReport {
            format_version: DRILL_FORMAT,
            drill_id: drill_id.to_string(),
            application: application.to_string(),
            backup_id: backup_id.to_string(),
            started_at: now,
            finished_at: now,
            passed: false,
            databases: Vec::new(),
            volumes: Vec::new(),
            cleaned_up: Vec::new(),
            cleanup_errors: Vec::new(),
            manifests_skipped: Vec::new(),
            error: None,
            report_key: String::new(),
        }
    }

    /// One line for the event and the log.
    pub fn summary(&self) -> String {
        let failures: Vec<String> = self
            .error
            .iter()
            .cloned()
            .chain(self.databases.iter().filter_map(|d| {
                d.error
                    .as_ref()
                    .map(|e| format!("database {}: {e}", d.database))
            }))
            .chain(self.volumes.iter().filter_map(|v| {
                v.error
                    .as_ref()
                    .map(|e| format!("{} {}: {e}", v.instance_id, v.device))
            }))
            .chain(self.cleanup_errors.iter().cloned())
            .collect();
        let what = format!(
            "{} database(s) and {} volume(s) of backup {}",
            self.databases.len(),
            self.volumes.len(),
            self.backup_id
        );
        if failures.is_empty() {
            format!("drill passed: {what} restored into scratch and matched")
        } else {
            format!("drill failed on {what}: {}", failures.join("; "))
        }
    }
}

/// The backup a drill takes: the newest completed pre-deploy backup.
pub fn latest_good(manifests: &[Manifest]) -> Option<&Manifest> {
    manifests
        .iter()
        .filter(|m| m.state == BackupState::Completed && m.purpose == Purpose::Backup)
        .max_by(|a, b| {
            a.started_at
                .cmp(&b.started_at)
                .then_with(|| a.backup_id.cmp(&b.backup_id))
        })
}

/// The drill schedule fired: drills every application, waiting for each new volume as long
/// as the deployment configures (`BACKSTOP_DRILL_VOLUME_WAIT_SECONDS`).
pub async fn handle(ctx: &Context, event: ScheduledEvent) -> Result<Vec<DrillReport>, Error> {
    crate::tasks::check_scheduled(&event)?;
    let task = DrillTask {
        application: None,
        volume_wait_seconds: ctx.config.drill_volume_wait_seconds,
    };
    run(ctx, &task).await
}

/// Drills the latest good backup of each application (or of the one given). An application
/// without a good backup is reported as a failed drill: it has nothing to restore.
pub async fn run(ctx: &Context, task: &DrillTask) -> Result<Vec<DrillReport>, Error> {
    let catalog = ctx.catalog();
    let apps = match &task.application {
        Some(a) => vec![a.clone()],
        None => catalog.applications().await?,
    };
    let mut reports = Vec::new();
    for app in apps {
        if check_segment("application", &app).is_err() {
            continue;
        }
        let listing = catalog.list(Some(&app)).await?;
        let manifests = listing.manifests;
        let drill_id = format!("drill-{}", timestamp(OffsetDateTime::now_utc()));
        let mut report = match latest_good(&manifests) {
            Some(m) => drill_backup(ctx, m, &drill_id, task).await,
            None => DrillReport {
                error: Some(format!("{app} has no completed backup to drill")),
                ..DrillReport::start(&drill_id, &app, "")
            },
        };
        report.manifests_skipped = listing.skipped;
        if !report.backup_id.is_empty() {
            report.report_key = format!(
                "{}/{drill_id}.json",
                catalog.backup_dir(&app, &report.backup_id)
            );
            let body = serde_json::to_vec_pretty(&report)
                .map_err(|e| Error::InvalidInput(format!("drill report: {e}")))?;
            catalog
                .store
                .put_bytes(&report.report_key, body, "application/json")
                .await?;
        }
        let summary = report.summary();
        tracing::info!(application = %app, passed = report.passed, "{summary}");
        let mut detail = EventDetail::new(&summary, &app, &report.backup_id);
        detail.drill_id = Some(report.drill_id.clone());
        detail.report = (!report.report_key.is_empty())
            .then(|| format!("s3://{}/{}", catalog.store.bucket(), report.report_key));
        let outcome = if report.passed {
            Outcome::DrillPassed
        } else {
            Outcome::DrillFailed
        };
        ctx.events().publish(outcome, &detail).await;
        reports.push(report);
    }
    Ok(reports)
}

async fn drill_backup(
    ctx: &Context,
    manifest: &Manifest,
    drill_id: &str,
    task: &DrillTask,
) -> DrillReport {
    let mut report = DrillReport::start(drill_id, &manifest.application, &manifest.backup_id);
    for entry in &manifest.databases {
        let tested = drill_database(ctx, manifest, entry).await;
        report.databases.push(DatabaseDrill {
            database: entry.label(),
            bytes: entry.artifact.bytes,
            tables_matched: tested.as_ref().ok().copied(),
            error: tested.err().map(|e| Named(&e).to_string()),
        });
    }
    for instance in &manifest.instances {
        for volume in &instance.volumes {
            let Some(snapshot_id) = &volume.snapshot_id else {
                report.volumes.push(VolumeDrill {
                    instance_id: instance.instance_id.clone(),
                    device: volume.device.clone(),
                    snapshot_id: String::new(),
                    volume_id: None,
                    error: Some("the manifest records no snapshot for it".to_string()),
                });
                continue;
            };
            // The wait fits the function: it ends with time left to delete the volume.
            let configured = Duration::from_secs(task.volume_wait_seconds);
            let wait =
                crate::deadline::limit(Some(configured), VOLUME_RESERVE).unwrap_or(configured);
            if wait.is_zero() {
                report.volumes.push(VolumeDrill {
                    instance_id: instance.instance_id.clone(),
                    device: volume.device.clone(),
                    snapshot_id: snapshot_id.clone(),
                    volume_id: None,
                    error: Some(
                        "not drilled: the function's deadline came first (the next drill \
                         starts over)"
                            .to_string(),
                    ),
                });
                continue;
            }
            let mut created = None;
            let checked = drill_volume(
                ctx,
                manifest,
                instance.availability_zone.as_str(),
                volume,
                snapshot_id,
                drill_id,
                wait,
                &mut created,
            )
            .await;
            if let Some(id) = &created {
                match ctx
                    .ec2()
                    .call("DeleteVolume", |c| c.delete_volume().volume_id(id).send())
                    .await
                {
                    Ok(_) => report.cleaned_up.push(format!("volume {id}")),
                    Err(e) => report
                        .cleanup_errors
                        .push(format!("volume {id} was not deleted: {}", Named(&e))),
                }
            }
            report.volumes.push(VolumeDrill {
                instance_id: instance.instance_id.clone(),
                device: volume.device.clone(),
                snapshot_id: snapshot_id.clone(),
                volume_id: created,
                error: checked.err().map(|e| Named(&e).to_string()),
            });
        }
    }
    if manifest.databases.is_empty() && manifest.instances.is_empty() {
        report.error = Some("the backup holds nothing to restore".to_string());
    }
    report.finished_at = OffsetDateTime::now_utc();
    report.passed = report.error.is_none()
        && report.cleanup_errors.is_empty()
        && report.databases.iter().all(|d| d.error.is_none())
        && report.volumes.iter().all(|v| v.error.is_none());
    report
}

/// Restores one database of the backup into a scratch database on its own server (found
/// through the run document the backup recorded) and checks every table's row count; the
/// scratch database is dropped whatever happens. Returns the tables matched.
async fn drill_database(
    ctx: &Context,
    manifest: &Manifest,
    entry: &DatabaseBackup,
) -> Result<usize, Error> {
    let run = manifest.run.as_ref().ok_or_else(|| {
        Error::InvalidInput(format!(
            "backup {} records no run document, so where {} is cannot be known",
            manifest.backup_id,
            entry.label()
        ))
    })?;
    let mut server = None;
    for target in run.targets.iter().filter(|t| t.is_database()) {
        let db = ctx.database(&manifest.application, target).await?;
        if entry.is(&db.server(), &db.dbname) {
            server = Some(db);
            break;
        }
    }
    let server = server.ok_or_else(|| {
        Error::InvalidInput(format!(
            "no database target of backup {}'s run is {}",
            manifest.backup_id,
            entry.label()
        ))
    })?;
    let mut one = manifest.clone();
    one.databases.retain(|d| d == entry);
    let verified = verify_databases(
        ctx.catalog(),
        &ctx.tools,
        &one,
        Some(&server),
        DownloadTuning::default(),
        &Quiet,
    )
    .await?;
    Ok(verified
        .databases
        .first()
        .and_then(|d| d.restore_test_tables)
        .unwrap_or(0))
}

/// Creates a volume from `snapshot_id` (tagged with the drill), waits for it to be available
/// and checks it comes from that snapshot with at least the recorded size. `created` holds
/// the new volume as soon as it exists, so the caller deletes it even on failure.
#[allow(clippy::too_many_arguments)]
async fn drill_volume(
    ctx: &Context,
    manifest: &Manifest,
    availability_zone: &str,
    volume: &VolumeBackup,
    snapshot_id: &str,
    drill_id: &str,
    wait: Duration,
    created: &mut Option<String>,
) -> Result<(), Error> {
    let tags = vec![
        (TAG_DRILL.to_string(), drill_id.to_string()),
        (TAG_DRILL_OF.to_string(), manifest.backup_id.clone()),
    ];
    // As the restore creates it: provisioned IOPS and throughput where the type takes them.
    let iops = volume
        .iops
        .filter(|_| matches!(volume.volume_type.as_str(), "io1" | "io2" | "gp3"));
    let throughput = volume.throughput.filter(|_| volume.volume_type == "gp3");
    let out = ctx
        .ec2()
        .call("CreateVolume", |c| {
            c.create_volume()
                .availability_zone(availability_zone)
                .snapshot_id(snapshot_id)
                .volume_type(VolumeType::from(volume.volume_type.as_str()))
                .set_iops(iops)
                .set_throughput(throughput)
                // A retried create that went through returns that volume, not a second one.
                .client_token(client_token(&["CreateVolume", drill_id, snapshot_id]))
                .tag_specifications(tag_spec(ResourceType::Volume, &tags))
                .send()
        })
        .await?;
    let id = out.volume_id().unwrap_or_default().to_string();
    *created = Some(id.clone());
    let deadline = std::time::Instant::now() + wait;
    let mut pause = Duration::from_secs(1);
    loop {
        let found = ctx.ec2().volumes(std::slice::from_ref(&id)).await?;
        let v = found
            .first()
            .ok_or_else(|| drill_error(format!("volume {id} vanished")))?;
        match v.state() {
            Some(VolumeState::Available) => {
                let from = v.snapshot_id().unwrap_or("");
                if from != snapshot_id {
                    return Err(drill_error(format!(
                        "volume {id} comes from snapshot {from:?}, not {snapshot_id}"
                    )));
                }
                let size = v.size().unwrap_or(0);
                if size < volume.size_gib {
                    return Err(drill_error(format!(
                        "volume {id} has {size} GiB, the backup recorded {} GiB",
                        volume.size_gib
                    )));
                }
                return Ok(());
            }
            Some(VolumeState::Creating) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(15));
            }
            other => {
                let still_creating = other == Some(&VolumeState::Creating);
                let other = other.map(|s| s.as_str()).unwrap_or("unknown");
                return Err(drill_error(format!(
                    "volume {id} from {snapshot_id} is {other}{}",
                    if still_creating {
                        format!(" after {} s", wait.as_secs())
                    } else {
                        String::new()
                    }
                )));
            }
        }
    }
}

fn drill_error(reason: String) -> Error {
    Error::DrillFailed(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drill_failing_anywhere_says_where() {
        let mut r = DrillReport {
            format_version: DRILL_FORMAT,
            drill_id: "drill-1".into(),
            application: "shop".into(),
            backup_id: "b1".into(),
            started_at: OffsetDateTime::UNIX_EPOCH,
            finished_at: OffsetDateTime::UNIX_EPOCH,
            passed: true,
            databases: vec![DatabaseDrill {
                database: "shop".into(),
                bytes: 10,
                tables_matched: Some(3),
                error: None,
            }],
            volumes: Vec::new(),
            cleaned_up: Vec::new(),
            cleanup_errors: Vec::new(),
            manifests_skipped: Vec::new(),
            error: None,
            report_key: String::new(),
        };
        assert!(r.summary().starts_with("drill passed: 1 database(s)"));
        r.cleanup_errors.push("volume vol-1 was not deleted".into());
        assert!(r.summary().contains("volume vol-1 was not deleted"));
    }
}
