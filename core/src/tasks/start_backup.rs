//! start-backup: backs up one target of the run under the run's backup id. A database is
//! dumped into the catalog to the end; instances get their snapshot sets (or images) started,
//! recorded as pending, and polled once. A retried call finds what the first one created.

use time::OffsetDateTime;

use crate::context::Context;
use crate::db::backup::{backup_database, BackupRequest};
use crate::error::Error;
use crate::instance::backup::{start_instances, InstanceBackupRequest};
use crate::model::job::{Job, JobReport, TargetTask};
use crate::model::run::Target;
use crate::progress::Quiet;
use crate::tasks::poll_job::poll_backup;

/// Backs up one target; the report says whether the poll loop must follow it.
pub async fn handle(ctx: &Context, task: TargetTask) -> Result<JobReport, Error> {
    match &task.target {
        Target::Instance {
            instance_id,
            tags,
            mode,
            ..
        } => {
            let ids: Vec<String> = instance_id.iter().cloned().collect();
            let tags: Vec<(String, String)> =
                tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let mut req = InstanceBackupRequest::new(&task.backup_id, &task.application, *mode);
            req.commit = task.version.commit.clone();
            let (_, jobs) = start_instances(
                ctx.ec2(),
                ctx.catalog(),
                &req,
                &ids,
                &tags,
                OffsetDateTime::now_utc(),
            )
            .await?;
            let job = Job::InstanceBackup {
                jobs,
                wait_for: task.policy.wait_for,
                poll: task.policy.poll,
            };
            poll_backup(ctx, job).await
        }
        Target::Database { .. } => {
            let db = ctx.database(&task.application, &task.target).await?;
            let mut req = BackupRequest::new(&task.application);
            req.backup_id = Some(task.backup_id.clone());
            req.app_version = task.version.commit.clone();
            let manifest = backup_database(
                ctx.catalog(),
                &ctx.tools,
                &db,
                &req,
                &Quiet,
                std::future::pending(),
            )
            .await?;
            let entry = manifest.database(&db.server(), &db.dbname)?;
            Ok(JobReport::completed(
                Job::DatabaseBackup {
                    backup_id: task.backup_id.clone(),
                    database: db.dbname.clone(),
                    server: entry.server.clone(),
                },
                format!(
                    "database {} dumped ({} bytes)",
                    entry.label(),
                    entry.artifact.bytes
                ),
            ))
        }
    }
}
