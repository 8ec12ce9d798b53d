//! restore: puts one target of the run back to the backup. A database is restored by swap
//! (the failed one kept under another name); instances start their restore, which the poll
//! loop advances one step per poll. The restore id names the run: the same id resumes it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::context::Context;
use crate::db::restore::{restore_database, RestoreMode, RestoreRequest};
use crate::error::Error;
use crate::instance::target_instance_ids;
use crate::model::job::{Job, JobReport, TargetTask};
use crate::model::run::Target;
use crate::progress::Quiet;
use crate::tasks::poll_job::advance_restore;

/// The input of restore.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreTask {
    #[serde(flatten)]
    pub task: TargetTask,
    /// Names this restore run; the same id resumes it.
    pub restore_id: String,
}

/// Puts one target back to the backup.
pub async fn handle(ctx: &Context, input: RestoreTask) -> Result<JobReport, Error> {
    let task = &input.task;
    let manifest = ctx
        .catalog()
        .manifest(&task.application, &task.backup_id)
        .await?;
    match &task.target {
        Target::Instance {
            instance_id,
            tags,
            restore_mode,
            ..
        } => {
            let instance_ids = target_instance_ids(ctx.ec2(), instance_id, tags).await?;
            for id in &instance_ids {
                manifest.instance(id)?;
            }
            let job = Job::InstanceRestore {
                backup_id: task.backup_id.clone(),
                application: task.application.clone(),
                instance_ids,
                restore_id: input.restore_id.clone(),
                mode: *restore_mode,
                started_at: OffsetDateTime::now_utc(),
                poll: task.policy.poll,
            };
            advance_restore(ctx, job).await
        }
        Target::Database { .. } => {
            let db = ctx.database(&task.application, &task.target).await?;
            let mut req = RestoreRequest::new(&task.backup_id, RestoreMode::Swap);
            req.application = Some(task.application.clone());
            req.database = Some(db.dbname.clone());
            req.server = Some(db.server());
            let report = restore_database(
                ctx.catalog(),
                &ctx.tools,
                &db,
                &req,
                &Quiet,
                std::future::pending(),
            )
            .await?;
            Ok(JobReport::completed(
                Job::DatabaseRestore {
                    database: report.database.clone(),
                    server: db.server(),
                    failed_state_database: report.failed_state_database.clone(),
                },
                format!(
                    "database {} on {} restored ({} tables match the manifest){}{}",
                    report.database,
                    db.server(),
                    report.tables.len(),
                    report
                        .failed_state_database
                        .as_ref()
                        .map(|f| format!("; the failed state is kept as {f}"))
                        .unwrap_or_default(),
                    if report.properties_not_restored.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; not put back: {}",
                            report.properties_not_restored.join("; ")
                        )
                    }
                ),
            ))
        }
    }
}
