//! Backing up EC2 instances: resolve the targets (ids or a tag filter), start a crash-consistent
//! snapshot set (`CreateSnapshots`) or an image (`CreateImage`), poll it to completion, and keep
//! the catalog's manifest in step. Starting is idempotent: resources already tagged with the
//! backup id and instance are found and returned, so a retried call creates nothing twice.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    Image, ImageState, InstanceSpecification, ResourceType, Snapshot, SnapshotState, Volume,
};

use time::OffsetDateTime;

use crate::aws::ec2::{
    client_token, copyable_tags, tag_filters, tag_spec, Ec2, InstanceView, TAG_APPLICATION,
    TAG_BACKUP_ID, TAG_COMMIT, TAG_DEVICE, TAG_INSTANCE_ID,
};
use crate::catalog::Catalog;
use crate::error::Error;
use crate::model::job::InstanceJob;
use crate::model::manifest::{
    check_segment, BackupState, InstanceBackup, InstanceBackupMode, Manifest, Purpose,
    VolumeBackup, MANIFEST_FORMAT,
};
use crate::model::poll::{JobStatus, PollPolicy};
use crate::progress::Progress;

/// What to back up and how.
#[derive(Clone, Debug)]
pub struct InstanceBackupRequest {
    /// Given by the caller, so that a retried call finds what the first one created.
    pub backup_id: String,
    pub application: String,
    /// The application commit or version being protected.
    pub commit: Option<String>,
    pub mode: InstanceBackupMode,
    /// Snapshots mode: leave out the root (boot) volume.
    pub exclude_boot: bool,
    /// Snapshots mode: only these device names (empty: every attached EBS volume).
    pub devices: Vec<String>,
    /// Image mode: create the image without rebooting the instance (the default).
    pub no_reboot: bool,
}

impl InstanceBackupRequest {
    pub fn new(backup_id: &str, application: &str, mode: InstanceBackupMode) -> Self {
        InstanceBackupRequest {
            backup_id: backup_id.to_string(),
            application: application.to_string(),
            commit: None,
            mode,
            exclude_boot: false,
            devices: Vec::new(),
            no_reboot: true,
        }
    }

    fn tags(&self, instance_id: &str) -> Vec<(String, String)> {
        let mut tags = vec![
            (TAG_BACKUP_ID.to_string(), self.backup_id.clone()),
            (TAG_APPLICATION.to_string(), self.application.clone()),
            (TAG_INSTANCE_ID.to_string(), instance_id.to_string()),
        ];
        if let Some(c) = &self.commit {
            tags.push((TAG_COMMIT.to_string(), c.clone()));
        }
        tags
    }
}

/// The instances named by id and/or matching every tag; at least one of the two is required.
pub async fn resolve_targets(
    ec2: &Ec2,
    instance_ids: &[String],
    tags: &[(String, String)],
) -> Result<Vec<InstanceView>, Error> {
    if instance_ids.is_empty() && tags.is_empty() {
        return Err(Error::InvalidInput(
            "name the instances to back up by id or by tag".to_string(),
        ));
    }
    let mut found = ec2.instances_by_id(instance_ids).await?;
    if !tags.is_empty() {
        for v in ec2.instances_by_tags(tags).await? {
            if !found.iter().any(|f| f.instance_id == v.instance_id) {
                found.push(v);
            }
        }
    }
    Ok(found)
}

/// Starts (or finds) the backup of one instance and returns its manifest entry, `pending`.
pub async fn start_instance_backup(
    ec2: &Ec2,
    req: &InstanceBackupRequest,
    instance: &InstanceView,
) -> Result<InstanceBackup, Error> {
    check_segment("backup id", &req.backup_id)?;
    check_segment("application", &req.application)?;
    let id = &instance.instance_id;
    let selected = select_devices(req, instance)?;
    let volume_ids: Vec<String> = selected.values().cloned().collect();
    let volumes = ec2.volumes(&volume_ids).await?;
    let by_id: BTreeMap<&str, &Volume> = volumes
        .iter()
        .filter_map(|v| Some((v.volume_id()?, v)))
        .collect();
    let tags = req.tags(id);
    let mut entry = InstanceBackup {
        instance_id: id.clone(),
        availability_zone: instance.availability_zone.clone(),
        mode: req.mode,
        image_id: None,
        state: BackupState::Pending,
        volumes: Vec::new(),
        error: None,
    };
    for (device, volume_id) in &selected {
        let v = by_id.get(volume_id.as_str()).ok_or_else(|| Error::Ec2 {
            operation: "DescribeVolumes",
            code: "InvalidVolume.NotFound".to_string(),
            reason: format!("volume {volume_id} at {device} of {id} was not described"),
            source: None,
        })?;
        entry.volumes.push(VolumeBackup {
            device: device.clone(),
            boot: instance.root_device.as_deref() == Some(device.as_str()),
            volume_id: volume_id.clone(),
            size_gib: v.size().unwrap_or_default(),
            volume_type: v
                .volume_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_else(|| "gp3".to_string()),
            iops: v.iops(),
            throughput: v.throughput(),
            encrypted: v.encrypted().unwrap_or(false),
            kms_key_id: v.kms_key_id().map(str::to_string),
            snapshot_id: None,
        });
    }
    match req.mode {
        InstanceBackupMode::Snapshots => {
            let mut snapshots = backup_snapshots(ec2, &req.backup_id, id).await?;
            if snapshots.is_empty() {
                let excluded: Vec<String> = instance
                    .devices
                    .iter()
                    .filter(|(d, _)| {
                        !selected.contains_key(*d) && instance.root_device.as_ref() != Some(*d)
                    })
                    .map(|(_, v)| v.clone())
                    .collect();
                let spec = InstanceSpecification::builder()
                    .instance_id(id)
                    .exclude_boot_volume(req.exclude_boot)
                    .set_exclude_data_volume_ids((!excluded.is_empty()).then_some(excluded))
                    .build();
                let out = ec2
                    .call("CreateSnapshots", |c| {
                        c.create_snapshots()
                            .instance_specification(spec.clone())
                            .description(format!("Backstop backup {} of {id}", req.backup_id))
                            .tag_specifications(tag_spec(ResourceType::Snapshot, &tags))
                            .send()
                    })
                    .await?;
                snapshots = out
                    .snapshots()
                    .iter()
                    .filter_map(|s| {
                        Some((s.volume_id()?.to_string(), s.snapshot_id()?.to_string()))
                    })
                    .collect();
                tracing::info!(instance = %id, snapshots = snapshots.len(), "snapshot set started");
            } else {
                tracing::info!(instance = %id, "snapshot set found from an earlier call");
            }
            for vol in entry.volumes.iter_mut() {
                vol.snapshot_id = snapshots.get(&vol.volume_id).cloned();
                if vol.snapshot_id.is_none() {
                    return Err(Error::InstanceBackupFailed {
                        backup_id: req.backup_id.clone(),
                        instance_id: id.clone(),
                        reason: format!(
                            "CreateSnapshots returned no snapshot of {} at {}",
                            vol.volume_id, vol.device
                        ),
                    });
                }
            }
            copy_volume_tags(ec2, &entry, &by_id).await?;
        }
        InstanceBackupMode::Image => {
            let image = match backup_image(ec2, &req.backup_id, id).await? {
                Some(image) => image,
                None => create_image(ec2, req, id, &tags).await?,
            };
            entry.image_id = image.image_id().map(str::to_string);
            fill_image_snapshots(&mut entry, &image);
        }
    }
    Ok(entry)
}

/// The devices to back up: all attached EBS volumes, minus the boot volume when excluded,
/// narrowed to `req.devices` when given.
fn select_devices(
    req: &InstanceBackupRequest,
    instance: &InstanceView,
) -> Result<BTreeMap<String, String>, Error> {
    let id = &instance.instance_id;
    if instance.devices.is_empty() {
        return Err(Error::NoEbsVolumes {
            instance_id: id.clone(),
            detail: String::new(),
        });
    }
    if req.mode == InstanceBackupMode::Image && (req.exclude_boot || !req.devices.is_empty()) {
        return Err(Error::InvalidInput(
            "an image always holds every volume: --exclude-boot and --device apply to snapshots mode"
                .to_string(),
        ));
    }
    for d in &req.devices {
        if !instance.devices.contains_key(d) {
            return Err(Error::InvalidInput(format!(
                "instance {id} has no EBS volume at {d} (it has {})",
                instance
                    .devices
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let selected: BTreeMap<String, String> = instance
        .devices
        .iter()
        .filter(|(d, _)| !(req.exclude_boot && instance.root_device.as_ref() == Some(*d)))
        .filter(|(d, _)| req.devices.is_empty() || req.devices.contains(d))
        .map(|(d, v)| (d.clone(), v.clone()))
        .collect();
    if selected.is_empty() {
        return Err(Error::NoEbsVolumes {
            instance_id: id.clone(),
            detail: " once the boot volume is excluded".to_string(),
        });
    }
    Ok(selected)
}

/// Snapshots already tagged with this backup and instance: volume id to snapshot id.
async fn backup_snapshots(
    ec2: &Ec2,
    backup_id: &str,
    instance_id: &str,
) -> Result<BTreeMap<String, String>, Error> {
    let filters = tag_filters(&[(TAG_BACKUP_ID, backup_id), (TAG_INSTANCE_ID, instance_id)]);
    let out = ec2
        .call("DescribeSnapshots", |c| {
            c.describe_snapshots()
                .owner_ids("self")
                .set_filters(Some(filters.clone()))
                .send()
        })
        .await?;
    Ok(out
        .snapshots()
        .iter()
        .filter_map(|s| Some((s.volume_id()?.to_string(), s.snapshot_id()?.to_string())))
        .collect())
}

/// The most tags of Backstop's a snapshot carries: the backup's own (backup id, application,
/// instance id, commit) and its device.
const SNAPSHOT_OWN_TAGS: usize = 5;

/// Each snapshot gets its source volume's tags (as many as fit beside Backstop's) and its
/// device name.
async fn copy_volume_tags(
    ec2: &Ec2,
    entry: &InstanceBackup,
    volumes: &BTreeMap<&str, &Volume>,
) -> Result<(), Error> {
    for vol in &entry.volumes {
        let (Some(snapshot), Some(v)) = (&vol.snapshot_id, volumes.get(vol.volume_id.as_str()))
        else {
            continue;
        };
        let mut tags = copyable_tags(v.tags(), SNAPSHOT_OWN_TAGS);
        tags.push((TAG_DEVICE.to_string(), vol.device.clone()));
        ec2.tag(std::slice::from_ref(snapshot), &tags).await?;
    }
    Ok(())
}

/// The image already tagged with this backup and instance.
async fn backup_image(
    ec2: &Ec2,
    backup_id: &str,
    instance_id: &str,
) -> Result<Option<Image>, Error> {
    let filters = tag_filters(&[(TAG_BACKUP_ID, backup_id), (TAG_INSTANCE_ID, instance_id)]);
    let out = ec2
        .call("DescribeImages", |c| {
            c.describe_images()
                .owners("self")
                .set_filters(Some(filters.clone()))
                .send()
        })
        .await?;
    Ok(out.images().first().cloned())
}

/// The most characters of an AMI name.
/// <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html>
const MAX_IMAGE_NAME: usize = 128;

/// The image's name: `backstop-<application>-<backup id>-<instance id>` when that fits EC2's
/// 128 characters, else `backstop-<hash of application and backup id>-<instance id>` (the
/// image is found by its tags, the name only has to be unique and stable).
fn image_name(req: &InstanceBackupRequest, instance_id: &str) -> String {
    let full = format!(
        "backstop-{}-{}-{instance_id}",
        req.application, req.backup_id
    );
    if full.len() <= MAX_IMAGE_NAME {
        return full;
    }
    let hashed = client_token(&[&req.application, &req.backup_id]);
    format!("{hashed}-{instance_id}")
}

async fn create_image(
    ec2: &Ec2,
    req: &InstanceBackupRequest,
    instance_id: &str,
    tags: &[(String, String)],
) -> Result<Image, Error> {
    let name = image_name(req, instance_id);
    let created = ec2
        .call("CreateImage", |c| {
            c.create_image()
                .instance_id(instance_id)
                .name(name.clone())
                .description(format!(
                    "Backstop backup {} of {instance_id}",
                    req.backup_id
                ))
                .no_reboot(req.no_reboot)
                .tag_specifications(tag_spec(ResourceType::Image, tags))
                .tag_specifications(tag_spec(ResourceType::Snapshot, tags))
                .send()
        })
        .await;
    let image_id = match created {
        Ok(out) => out.image_id().map(str::to_string),
        // A retried call whose first attempt went through: the name is taken by our image.
        Err(Error::Ec2 { code, .. }) if code == "InvalidAMIName.Duplicate" => None,
        Err(e) => return Err(e),
    };
    let by = match &image_id {
        Some(id) => vec![aws_sdk_ec2::types::Filter::builder()
            .name("image-id")
            .values(id)
            .build()],
        None => vec![aws_sdk_ec2::types::Filter::builder()
            .name("name")
            .values(&name)
            .build()],
    };
    let out = ec2
        .call("DescribeImages", |c| {
            c.describe_images()
                .owners("self")
                .set_filters(Some(by.clone()))
                .send()
        })
        .await?;
    match out.images().first() {
        Some(i) => Ok(i.clone()),
        None => Ok(Image::builder().set_image_id(image_id).build()),
    }
}

/// Image mode: each volume's snapshot, from the image's block device mappings.
fn fill_image_snapshots(entry: &mut InstanceBackup, image: &Image) {
    for m in image.block_device_mappings() {
        let (Some(device), Some(snapshot)) =
            (m.device_name(), m.ebs().and_then(|e| e.snapshot_id()))
        else {
            continue;
        };
        if let Some(v) = entry.volumes.iter_mut().find(|v| v.device == device) {
            v.snapshot_id = Some(snapshot.to_string());
        }
    }
}

/// Polls a started instance backup. A multi-volume set is complete only when every snapshot
/// is `completed`; until then its progress is at most 99%.
pub async fn poll_instance_backup(
    ec2: &Ec2,
    job: &InstanceJob,
    policy: &PollPolicy,
    now: OffsetDateTime,
) -> Result<JobStatus, Error> {
    let elapsed: std::time::Duration = (now - job.started_at)
        .try_into()
        .unwrap_or(std::time::Duration::ZERO);
    let (progress, detail) = match job.mode {
        InstanceBackupMode::Snapshots => {
            let snapshots = match describe_snapshots(ec2, &job.snapshot_ids).await? {
                Ok(s) => s,
                Err(reason) => return Ok(JobStatus::Failed { reason }),
            };
            if let Some(failed) = snapshot_failure(&snapshots) {
                return Ok(JobStatus::Failed { reason: failed });
            }
            let done = snapshots
                .iter()
                .filter(|s| s.state() == Some(&SnapshotState::Completed))
                .count();
            if done == snapshots.len() {
                return Ok(JobStatus::Completed);
            }
            (
                set_progress(&snapshots),
                format!("{done} of {} snapshots completed", snapshots.len()),
            )
        }
        InstanceBackupMode::Image => {
            let Some(image_id) = &job.image_id else {
                return Err(Error::InvalidInput(
                    "an image-mode job carries no image_id".to_string(),
                ));
            };
            let out = ec2
                .call("DescribeImages", |c| {
                    c.describe_images().image_ids(image_id).send()
                })
                .await;
            let image = match out {
                Ok(out) => out.images().first().cloned(),
                Err(Error::Ec2 { code, .. }) if code.starts_with("InvalidAMIID") => None,
                Err(e) => return Err(e),
            };
            let Some(image) = image else {
                return Ok(JobStatus::Failed {
                    reason: format!("image {image_id} no longer exists"),
                });
            };
            match image.state().cloned().unwrap_or(ImageState::Pending) {
                ImageState::Available => return Ok(JobStatus::Completed),
                ImageState::Pending => {}
                other => {
                    let why = image
                        .state_reason()
                        .and_then(|r| r.message())
                        .unwrap_or("no reason given");
                    return Ok(JobStatus::Failed {
                        reason: format!("image {image_id} is {}: {why}", other.as_str()),
                    });
                }
            }
            let ids: Vec<String> = image
                .block_device_mappings()
                .iter()
                .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_string))
                .collect();
            let progress = match describe_snapshots(ec2, &ids).await? {
                Ok(s) if !s.is_empty() => set_progress(&s),
                _ => 0,
            };
            (progress, format!("image {image_id} is pending"))
        }
    };
    if policy.expired(elapsed) {
        return Ok(JobStatus::TimedOut {
            waited_seconds: elapsed.as_secs(),
        });
    }
    Ok(JobStatus::Pending {
        progress,
        next_wait_seconds: policy.next_wait_at(elapsed, progress).as_secs(),
        detail,
    })
}

/// The snapshots by id, or why they cannot be polled (one no longer exists).
async fn describe_snapshots(
    ec2: &Ec2,
    ids: &[String],
) -> Result<Result<Vec<Snapshot>, String>, Error> {
    if ids.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    let out = ec2
        .call("DescribeSnapshots", |c| {
            c.describe_snapshots()
                .set_snapshot_ids(Some(ids.to_vec()))
                .send()
        })
        .await;
    match out {
        Ok(out) => {
            let found = out.snapshots().to_vec();
            match ids
                .iter()
                .find(|id| !found.iter().any(|s| s.snapshot_id() == Some(id.as_str())))
            {
                Some(missing) => Ok(Err(format!("snapshot {missing} no longer exists"))),
                None => Ok(Ok(found)),
            }
        }
        Err(Error::Ec2 { code, reason, .. }) if code.starts_with("InvalidSnapshot") => Ok(Err(
            format!("a snapshot of the set no longer exists: {reason}"),
        )),
        Err(e) => Err(e),
    }
}

fn snapshot_failure(snapshots: &[Snapshot]) -> Option<String> {
    let failed: Vec<String> = snapshots
        .iter()
        .filter(|s| s.state() == Some(&SnapshotState::Error))
        .map(|s| {
            format!(
                "snapshot {} of {} is in error: {}",
                s.snapshot_id().unwrap_or("?"),
                s.volume_id().unwrap_or("?"),
                s.state_message().unwrap_or("no reason given")
            )
        })
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

/// The mean progress of the set, capped at 99 while any snapshot is not completed.
fn set_progress(snapshots: &[Snapshot]) -> u8 {
    if snapshots.is_empty() {
        return 0;
    }
    let sum: u32 = snapshots
        .iter()
        .map(|s| {
            s.progress()
                .and_then(|p| p.trim_end_matches('%').trim().parse::<u32>().ok())
                .unwrap_or(0)
                .min(100)
        })
        .sum();
    let mean = (sum / snapshots.len() as u32) as u8;
    mean.min(99)
}

/// Starts (or finds) the backup of every instance named by id or matching every tag, and
/// records them in the catalog, pending: the manifest and one job per instance to poll.
pub async fn start_instances(
    ec2: &Ec2,
    catalog: &Catalog,
    req: &InstanceBackupRequest,
    instance_ids: &[String],
    tags: &[(String, String)],
    now: OffsetDateTime,
) -> Result<(Manifest, Vec<InstanceJob>), Error> {
    let instances = resolve_targets(ec2, instance_ids, tags).await?;
    let mut entries = Vec::new();
    for i in &instances {
        entries.push(start_instance_backup(ec2, req, i).await?);
    }
    let manifest = record_started(catalog, req, &entries, now).await?;
    let jobs = entries
        .iter()
        .map(|e| InstanceJob::of(&req.backup_id, &req.application, e, manifest.started_at))
        .collect();
    Ok((manifest, jobs))
}

/// Writes (or merges into) the manifest the instances of a started backup. Instances
/// already recorded keep their entry, so a retried start never turns a completed instance
/// back into a pending one.
pub async fn record_started(
    catalog: &Catalog,
    req: &InstanceBackupRequest,
    entries: &[InstanceBackup],
    started_at: OffsetDateTime,
) -> Result<Manifest, Error> {
    catalog
        .update_manifest(&req.application, &req.backup_id, |current| {
            let mut manifest = current.unwrap_or_else(|| Manifest {
                format_version: MANIFEST_FORMAT,
                backup_id: req.backup_id.clone(),
                application: req.application.clone(),
                app_version: req.commit.clone(),
                purpose: Purpose::Backup,
                state: BackupState::Pending,
                started_at,
                finished_at: started_at,
                databases: Vec::new(),
                instances: Vec::new(),
                error: None,
                deployed: None,
                run: None,
            });
            for e in entries {
                if !manifest
                    .instances
                    .iter()
                    .any(|i| i.instance_id == e.instance_id)
                {
                    manifest.instances.push(e.clone());
                }
            }
            manifest.settle_state();
            Ok(manifest)
        })
        .await
}

/// Records a poll's outcome in the manifest. COMPLETED marks the instance completed (image
/// mode: with each volume's snapshot id); FAILED and TIMED_OUT delete what was created, so
/// no partial snapshot set outlives a failed backup, and mark it failed with the reason.
pub async fn record_outcome(
    ec2: &Ec2,
    catalog: &Catalog,
    job: &InstanceJob,
    status: &JobStatus,
    now: OffsetDateTime,
) -> Result<Manifest, Error> {
    let manifest = catalog.manifest(&job.application, &job.backup_id).await?;
    let mut entry = manifest.instance(&job.instance_id)?.clone();
    if entry.state != BackupState::Pending {
        return Ok(manifest);
    }
    match status {
        JobStatus::Pending { .. } => return Ok(manifest),
        JobStatus::Completed => {
            if let (InstanceBackupMode::Image, Some(image_id)) = (entry.mode, &entry.image_id) {
                let out = ec2
                    .call("DescribeImages", |c| {
                        c.describe_images().image_ids(image_id).send()
                    })
                    .await?;
                if let Some(image) = out.images().first() {
                    fill_image_snapshots(&mut entry, image);
                }
                // The image's snapshots exist now: give them their volumes' tags too.
                let ids: Vec<String> = entry.volumes.iter().map(|v| v.volume_id.clone()).collect();
                let volumes = match ec2.volumes(&ids).await {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "the source volumes' tags cannot be copied");
                        Vec::new()
                    }
                };
                let by_id: BTreeMap<&str, &Volume> = volumes
                    .iter()
                    .filter_map(|v| Some((v.volume_id()?, v)))
                    .collect();
                copy_volume_tags(ec2, &entry, &by_id).await?;
            }
            entry.state = BackupState::Completed;
        }
        JobStatus::Failed { reason } => {
            discard(ec2, job).await;
            entry.state = BackupState::Failed;
            entry.error = Some(reason.clone());
        }
        JobStatus::TimedOut { waited_seconds } => {
            discard(ec2, job).await;
            entry.state = BackupState::Failed;
            entry.error = Some(format!(
                "not complete after {waited_seconds} s; the snapshots were deleted"
            ));
        }
    }
    catalog
        .update_manifest(&job.application, &job.backup_id, |current| {
            let mut manifest = current.ok_or_else(|| Error::BackupNotFound {
                bucket: catalog.store.bucket().to_string(),
                prefix: catalog.prefix.clone(),
                backup_id: job.backup_id.clone(),
            })?;
            for i in manifest.instances.iter_mut() {
                if i.instance_id == entry.instance_id {
                    *i = entry.clone();
                }
            }
            manifest.finished_at = now;
            manifest.settle_state();
            Ok(manifest)
        })
        .await
}

/// Deletes the snapshots (and image) of a failed backup; what cannot be deleted stays tagged
/// with the backup id for the retention policy, and is logged. Only what carries this
/// backup's id tag is deleted: the ids come from the job, which came through the execution.
async fn discard(ec2: &Ec2, job: &InstanceJob) {
    let mut snapshots = job.snapshot_ids.clone();
    if let Some(image_id) = &job.image_id {
        match ec2.image_of_backup(image_id, &job.backup_id).await {
            Ok(Some(image)) => {
                snapshots.extend(
                    image
                        .block_device_mappings()
                        .iter()
                        .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_string)),
                );
                if let Err(e) = ec2
                    .call("DeregisterImage", |c| {
                        c.deregister_image().image_id(image_id).send()
                    })
                    .await
                {
                    tracing::warn!(image = %image_id, error = %e, "could not deregister the failed image");
                }
            }
            Ok(None) => {
                tracing::warn!(image = %image_id, "not deregistered: it does not carry this backup's id tag (or is gone)")
            }
            Err(e) => {
                tracing::warn!(image = %image_id, error = %e, "not deregistered: the image cannot be checked")
            }
        }
    }
    let tagged = match ec2.snapshots_of_backup(&snapshots, &job.backup_id).await {
        Ok(tagged) => tagged,
        Err(e) => {
            tracing::warn!(error = %e, "the failed set's snapshots cannot be listed; none deleted");
            Vec::new()
        }
    };
    for s in snapshots {
        if !tagged.contains(&s) {
            tracing::warn!(snapshot = %s, backup_id = %job.backup_id, "not deleted: it does not carry this backup's id tag");
            continue;
        }
        if let Err(e) = ec2
            .call("DeleteSnapshot", |c| {
                c.delete_snapshot().snapshot_id(&s).send()
            })
            .await
        {
            tracing::warn!(snapshot = %s, error = %e, "could not delete a snapshot of the failed set");
        }
    }
}

/// One poll of a backup's jobs.
pub struct PollRound<'j> {
    /// The jobs still pending, each with its progress and what it waits on.
    pub pending: Vec<(&'j InstanceJob, u8, String)>,
    /// How many jobs completed in this round.
    pub completed: usize,
    /// The shortest suggested wait of the pending jobs (the policy's longest when none is).
    pub wait_seconds: u64,
    /// The manifest after the last recorded outcome, when this round recorded one.
    pub manifest: Option<Manifest>,
}

/// Polls every job once and records each finished job's outcome in the manifest. A failed
/// or timed-out job is `InstanceBackupFailed` / `TimedOut`, returned once every finished
/// job of the round is recorded.
pub async fn poll_round<'j>(
    ec2: &Ec2,
    catalog: &Catalog,
    jobs: &[&'j InstanceJob],
    policy: &PollPolicy,
    now: OffsetDateTime,
) -> Result<PollRound<'j>, Error> {
    let mut round = PollRound {
        pending: Vec::new(),
        completed: 0,
        wait_seconds: policy.max_wait_seconds,
        manifest: None,
    };
    let mut failure = None;
    for &job in jobs {
        let status = poll_instance_backup(ec2, job, policy, now).await?;
        match &status {
            JobStatus::Pending {
                progress,
                next_wait_seconds,
                detail,
            } => {
                round.wait_seconds = round.wait_seconds.min(*next_wait_seconds);
                round.pending.push((job, *progress, detail.clone()));
                continue;
            }
            JobStatus::Completed => round.completed += 1,
            JobStatus::Failed { reason } => {
                failure.get_or_insert(Error::InstanceBackupFailed {
                    backup_id: job.backup_id.clone(),
                    instance_id: job.instance_id.clone(),
                    reason: reason.clone(),
                });
            }
            JobStatus::TimedOut { waited_seconds } => {
                failure.get_or_insert(Error::TimedOut {
                    operation: format!("backup of {}", job.instance_id),
                    seconds: *waited_seconds,
                });
            }
        }
        round.manifest = Some(record_outcome(ec2, catalog, job, &status, now).await?);
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(round),
    }
}

/// Polls every job until each one has finished, recording each outcome in the manifest and
/// sleeping the suggested wait in between. Fails with `InstanceBackupFailed` or `TimedOut`
/// (the manifest already says `failed`) unless every instance completed.
pub async fn wait_for_backup(
    ec2: &Ec2,
    catalog: &Catalog,
    jobs: &[InstanceJob],
    policy: &PollPolicy,
    progress: &dyn Progress,
) -> Result<Manifest, Error> {
    let mut open: Vec<&InstanceJob> = jobs.iter().collect();
    let mut manifest = None;
    progress.start("snapshots", None);
    while !open.is_empty() {
        let round = poll_round(ec2, catalog, &open, policy, OffsetDateTime::now_utc()).await;
        let round = match round {
            Ok(r) => r,
            Err(e) => {
                progress.finish();
                return Err(e);
            }
        };
        manifest = round.manifest.or(manifest);
        open = round.pending.iter().map(|(job, _, _)| *job).collect();
        if !open.is_empty() {
            let notes: Vec<String> = round
                .pending
                .iter()
                .map(|(job, p, detail)| format!("{}: {p}% ({detail})", job.instance_id))
                .collect();
            progress.note(&notes.join(", "));
            tokio::time::sleep(std::time::Duration::from_secs(round.wait_seconds)).await;
        }
    }
    progress.finish();
    manifest.ok_or_else(|| Error::InvalidInput("no instance jobs to wait for".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_name_fits_ec2s_128_characters_and_stays_unique_and_stable() {
        let instance = "i-0a1b2c3d4e5f60718";
        let short = InstanceBackupRequest::new(
            "20261125T150000Z-0badc0de",
            "shop",
            InstanceBackupMode::Image,
        );
        assert_eq!(
            image_name(&short, instance),
            "backstop-shop-20261125T150000Z-0badc0de-i-0a1b2c3d4e5f60718"
        );
        let app = "a".repeat(128);
        let long = InstanceBackupRequest::new(
            "codepipeline-0f3c2a4e-9b1d-4c8e-a6f2-7d5e9b3c1a20",
            &app,
            InstanceBackupMode::Image,
        );
        let name = image_name(&long, instance);
        assert!(name.len() <= MAX_IMAGE_NAME, "{name}");
        assert!(name.ends_with(instance), "{name}");
        assert_eq!(name, image_name(&long, instance));
        let other = InstanceBackupRequest::new(
            "codepipeline-0f3c2a4e-9b1d-4c8e-a6f2-7d5e9b3c1a21",
            &app,
            InstanceBackupMode::Image,
        );
        assert_ne!(name, image_name(&other, instance));
    }
}
