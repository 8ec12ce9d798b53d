//! verify, mode `restore` (VerifyRestore): after the restore Map, each target is what the
//! backup holds (a database its row counts; each instance running, every backed-up device on
//! a volume made from its snapshot) and the deployment checks pass again. Returns the cause the
//! execution fails with (`DeployFailed`): the original failure and what was restored. A target
//! not restored, or not matching, is `RestoreIncomplete` naming each.

use aws_sdk_ec2::types::InstanceStateName;
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::db::session::Session;
use crate::error::{Error, Named};
use crate::instance::target_instance_ids;
use crate::model::job::{DeployFailedCause, StepFailure, TargetRestore};
use crate::model::manifest::{check_counts, Manifest};
use crate::model::run::{RunDocument, Target};
use crate::tasks::verify::VerifyReport;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreTask {
    pub run: RunDocument,
    pub backup_id: String,
    /// The error that sent the execution into the restore path.
    #[serde(default)]
    pub failure: StepFailure,
    /// What each iteration of the restore Map reported, in the order of `run.targets`.
    #[serde(default)]
    pub restores: Vec<TargetRestore>,
}

pub async fn handle(ctx: &Context, task: RestoreTask) -> Result<VerifyReport, Error> {
    let RestoreTask {
        run,
        backup_id,
        failure,
        restores,
    } = &task;
    let manifest = ctx.catalog().manifest(&run.application, backup_id).await?;
    let why = format!(
        "the restore ran because the deploy failed with {}: {}",
        failure.error,
        failure.cause.chars().take(2000).collect::<String>()
    );
    let mut restored = Vec::new();
    let mut not_restored = Vec::new();
    for (i, t) in run.targets.iter().enumerate() {
        if let Some(f) = restores.get(i).and_then(TargetRestore::failure) {
            not_restored.push(format!("{} was not restored ({f})", t.label()));
            continue;
        }
        match verify_restored_target(ctx, &manifest, t).await {
            Ok(lines) => restored.extend(lines),
            Err(e @ Error::Throttled { .. }) => return Err(e),
            Err(e) => not_restored.push(format!(
                "{} does not match the backup after its restore ({})",
                t.label(),
                Named(&e)
            )),
        }
    }
    let restored_text = if restored.is_empty() {
        "nothing".to_string()
    } else {
        restored.join(", ")
    };
    if !not_restored.is_empty() {
        return Err(Error::RestoreIncomplete(format!(
            "{}; restored: {restored_text}; {why}",
            not_restored.join("; ")
        )));
    }
    // Checks that still fail once every target is back mean the restore did not bring the
    // service back: the execution fails with RestoreFailed, whose cause is this error alone,
    // so it says what was restored and why the restore ran.
    let checks = ctx.checker().run(run).await.map_err(|e| match e {
        Error::VerificationFailed(m) => Error::VerificationFailed(format!(
            "{m}, still after the restore ({restored_text}); {why}"
        )),
        other => other,
    })?;
    let cause = DeployFailedCause {
        error: failure.error.clone(),
        cause: failure.cause.clone(),
        backup_id: backup_id.to_string(),
        restored,
        checks_after_restore: checks.clone(),
    };
    Ok(VerifyReport {
        summary: format!("restored: {restored_text}; {checks}"),
        cause: Some(
            cause
                .to_bounded_json()
                .map_err(|e| Error::InvalidInput(format!("deploy failure cause: {e}")))?,
        ),
    })
}

/// Checks one restored target against the manifest: a database holds the backup's row
/// counts; each instance runs, every backed-up device on a volume made from its snapshot.
async fn verify_restored_target(
    ctx: &Context,
    manifest: &Manifest,
    target: &Target,
) -> Result<Vec<String>, Error> {
    match target {
        Target::Database { .. } => {
            let db = ctx.database(&manifest.application, target).await?;
            let entry = manifest.database(&db.server(), &db.dbname)?;
            let session = Session::connect(&db).await?;
            check_counts(
                &entry.tables,
                &session.row_counts().await?,
                &db.dbname,
                false,
            )?;
            Ok(vec![format!(
                "database {} ({} tables, row counts match the backup)",
                entry.label(),
                entry.tables.len()
            )])
        }
        Target::Instance {
            instance_id, tags, ..
        } => {
            let mut lines = Vec::new();
            for id in target_instance_ids(ctx.ec2(), instance_id, tags).await? {
                let entry = manifest.instance(&id)?;
                let instance = ctx.ec2().instance(&id).await?;
                if instance.state != InstanceStateName::Running {
                    return Err(Error::VerificationFailed(format!(
                        "instance {id} is {} after the restore",
                        instance.state.as_str()
                    )));
                }
                let attached: Vec<String> = instance.devices.values().cloned().collect();
                let volumes = ctx.ec2().volumes(&attached).await?;
                for v in &entry.volumes {
                    let now = instance.devices.get(&v.device);
                    let from = now.and_then(|vid| {
                        volumes
                            .iter()
                            .find(|x| x.volume_id() == Some(vid.as_str()))
                            .and_then(|x| x.snapshot_id())
                    });
                    if v.snapshot_id.is_some() && from != v.snapshot_id.as_deref() {
                        return Err(Error::VerificationFailed(format!(
                            "{id} {} is not on a volume from snapshot {}",
                            v.device,
                            v.snapshot_id.as_deref().unwrap_or("?")
                        )));
                    }
                }
                lines.push(format!(
                    "instance {id} ({} volumes from the backup's snapshots, running)",
                    entry.volumes.len()
                ));
            }
            Ok(lines)
        }
    }
}
