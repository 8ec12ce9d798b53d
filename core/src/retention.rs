//! Retention: what a backup catalog may forget. Per application, the newest `keep_last` good
//! backups (completed pre-deploy backups) are always kept, as is every backup a running
//! execution uses (its id is the execution's name) and every backup younger than `max_age`.
//! Every other backup (pre-deploy, forensic or failed) is pruned: its manifest is first marked
//! failed, so a half-pruned backup never looks restorable, then its images and snapshots
//! (found by their `backstop:backup-id` tag, so parts a manifest missed go too) and its objects
//! are deleted, the manifest last. Volumes a restore replaced (the kept failed state, tagged
//! `backstop:failed-state-of`) go once older than `max_age`. A dry run plans and deletes
//! nothing.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::catalog::{BackupState, Catalog, Manifest, Purpose};
use crate::ec2::{Ec2, TAG_BACKUP_ID, TAG_FAILED_STATE_OF};
use crate::error::Error;

/// How long backups live.
#[derive(Clone, Copy, Debug)]
pub struct RetentionPolicy {
    /// Good backups always kept per application, newest first.
    pub keep_last: usize,
    /// Anything younger is kept.
    pub max_age: Duration,
}

/// One backup and what retention does with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub application: String,
    pub backup_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub state: BackupState,
    /// `prune`, or `keep`.
    pub action: &'static str,
    pub reason: String,
}

/// What a prune does (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub backups: Vec<Decision>,
    /// Replaced volumes (kept failed state) older than the policy.
    pub volumes: Vec<String>,
}

impl Plan {
    pub fn to_prune(&self) -> impl Iterator<Item = &Decision> {
        self.backups.iter().filter(|d| d.action == "prune")
    }
}

/// Decides, backup by backup, what to keep. `running` holds the names of running executions.
pub async fn plan(
    catalog: &Catalog,
    ec2: &Ec2,
    application: Option<&str>,
    policy: &RetentionPolicy,
    running: &[String],
    now: OffsetDateTime,
) -> Result<Plan, Error> {
    let manifests = catalog.list(application).await?;
    let mut good_seen: std::collections::BTreeMap<String, usize> = Default::default();
    let mut backups = Vec::new();
    for m in &manifests {
        let good = m.state == BackupState::Completed && m.purpose == Purpose::Backup;
        let rank = good.then(|| {
            let n = good_seen.entry(m.application.clone()).or_default();
            *n += 1;
            *n
        });
        let age: Duration = (now - m.started_at).try_into().unwrap_or(Duration::ZERO);
        let (action, reason) = if rank.is_some_and(|r| r <= policy.keep_last) {
            (
                "keep",
                format!("one of the newest {} good backups", policy.keep_last),
            )
        } else if running
            .iter()
            .any(|n| *n == m.backup_id || *n == crate::guard::execution_name(&m.backup_id))
        {
            ("keep", "a running execution uses it".to_string())
        } else if age < policy.max_age {
            (
                "keep",
                format!("younger than {} s", policy.max_age.as_secs()),
            )
        } else {
            (
                "prune",
                format!(
                    "{} and {} s old",
                    describe(m, rank.is_some()),
                    age.as_secs()
                ),
            )
        };
        backups.push(Decision {
            application: m.application.clone(),
            backup_id: m.backup_id.clone(),
            started_at: m.started_at,
            state: m.state,
            action,
            reason,
        });
    }
    let volumes = replaced_volumes(ec2, policy, now).await?;
    Ok(Plan { backups, volumes })
}

fn describe(m: &Manifest, good: bool) -> &'static str {
    match (&m.purpose, m.state, good) {
        (Purpose::Forensic { .. }, _, _) => "a forensic dump",
        (_, BackupState::Failed, _) => "a failed backup",
        (_, BackupState::Pending, _) => "a backup that never completed",
        _ => "an older good backup",
    }
}

/// Volumes a restore replaced, older than the policy and no longer attached.
async fn replaced_volumes(
    ec2: &Ec2,
    policy: &RetentionPolicy,
    now: OffsetDateTime,
) -> Result<Vec<String>, Error> {
    let out = ec2
        .call("DescribeVolumes", |c| {
            c.describe_volumes()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("tag-key")
                        .values(TAG_FAILED_STATE_OF)
                        .build(),
                )
                .send()
        })
        .await?;
    Ok(out
        .volumes()
        .iter()
        .filter(|v| v.state().map(|s| s.as_str()) == Some("available"))
        .filter(|v| {
            v.create_time()
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok())
                .map(|t| (now - t).whole_seconds() >= policy.max_age.as_secs() as i64)
                .unwrap_or(false)
        })
        .filter_map(|v| v.volume_id().map(str::to_string))
        .collect())
}

/// Carries out a plan: each pruned backup is marked failed first, then its EC2 artifacts and
/// objects are deleted, the manifest last; then the replaced volumes.
pub async fn apply(catalog: &Catalog, ec2: &Ec2, plan: &Plan) -> Result<(), Error> {
    for d in plan.to_prune() {
        catalog
            .update_manifest(&d.application, &d.backup_id, |current| {
                let mut m = current.ok_or_else(|| Error::BackupNotFound {
                    bucket: catalog.store.bucket().to_string(),
                    prefix: catalog.prefix.clone(),
                    backup_id: d.backup_id.clone(),
                })?;
                m.state = BackupState::Failed;
                m.error = Some(format!("being pruned by retention: {}", d.reason));
                Ok(m)
            })
            .await?;
        delete_ec2_artifacts(ec2, &d.backup_id).await?;
        let dir = format!("{}/", catalog.backup_dir(&d.application, &d.backup_id));
        let manifest = catalog.manifest_key(&d.application, &d.backup_id);
        for key in catalog.store.list(&dir, None).await? {
            if key != manifest {
                catalog.store.delete(&key).await?;
            }
        }
        catalog.store.delete(&manifest).await?;
        tracing::info!(backup_id = %d.backup_id, reason = %d.reason, "pruned");
    }
    for v in &plan.volumes {
        ec2.call("DeleteVolume", |c| c.delete_volume().volume_id(v).send())
            .await?;
        tracing::info!(volume = %v, "replaced volume deleted");
    }
    Ok(())
}

/// Deregisters the images and deletes the snapshots tagged with the backup id.
async fn delete_ec2_artifacts(ec2: &Ec2, backup_id: &str) -> Result<(), Error> {
    let tagged = || {
        aws_sdk_ec2::types::Filter::builder()
            .name(format!("tag:{TAG_BACKUP_ID}"))
            .values(backup_id)
            .build()
    };
    let images = ec2
        .call("DescribeImages", |c| {
            c.describe_images().owners("self").filters(tagged()).send()
        })
        .await?;
    for image in images.images() {
        if let Some(id) = image.image_id() {
            ec2.call("DeregisterImage", |c| {
                c.deregister_image().image_id(id).send()
            })
            .await?;
        }
    }
    let snapshots = ec2
        .call("DescribeSnapshots", |c| {
            c.describe_snapshots()
                .owner_ids("self")
                .filters(tagged())
                .send()
        })
        .await?;
    for s in snapshots.snapshots() {
        if let Some(id) = s.snapshot_id() {
            ec2.call("DeleteSnapshot", |c| {
                c.delete_snapshot().snapshot_id(id).send()
            })
            .await?;
        }
    }
    Ok(())
}

/// The names of the running executions of a state machine: backup ids, or guard restores of
/// them (`guard::execution_name`).
pub async fn running_executions(
    sfn: &aws_sdk_sfn::Client,
    state_machine_arn: &str,
) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let page = sfn
            .list_executions()
            .state_machine_arn(state_machine_arn)
            .status_filter(aws_sdk_sfn::types::ExecutionStatus::Running)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| crate::executions::sfn_error("ListExecutions", &e))?;
        names.extend(page.executions().iter().map(|e| e.name().to_string()));
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(names);
        }
    }
}
