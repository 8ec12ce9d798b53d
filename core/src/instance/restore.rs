//! Restoring an EC2 instance from a backup, as a resumable sequence of steps.
//!
//! [`restore_instance_step`] reads the current state (instance, volumes created by this
//! restore, replace-root tasks), does only what is still missing and reports either
//! `done` or the phase it is waiting on. Calling it again after any interruption converges
//! to the same end state: a device never gets a second volume from the same restore, and a
//! volume this restore attached is never detached. The CLI loops over it with backoff; the
//! state machine's poll loop calls it once per poll.
//!
//! - **swap-volumes**: stop the instance; create each backed-up volume from its snapshot in
//!   the instance's AZ with the original's type, size, iops, throughput, encryption and KMS key;
//!   tag the current volume (`backstop:replaced-by`, `backstop:failed-state-of`) and detach it;
//!   attach the new one at the same device; start the instance. Replaced volumes are kept.
//! - **replace-root**: one `CreateReplaceRootVolumeTask` from the root snapshot (or the image),
//!   keeping the old root volume, then follow the task.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    Filter, InstanceStateName, ReplaceRootVolumeTaskState, ResourceType, Volume,
    VolumeAttachmentState, VolumeState, VolumeType,
};
use serde::{Deserialize, Serialize};

use crate::aws::ec2::{
    client_token, copyable_tags, tag_spec, tag_value, Ec2, InstanceView, TAG_BACKUP_ID, TAG_DEVICE,
    TAG_FAILED_STATE_OF, TAG_INSTANCE_ID, TAG_REPLACED_BY, TAG_REPLACED_IN, TAG_RESTORE_ID,
};
use crate::error::Error;
use crate::model::manifest::{check_segment, BackupState, InstanceBackup, InstanceBackupMode};
use crate::model::poll::PollPolicy;
use crate::model::run::InstanceRestoreMode;
use crate::progress::Progress;

/// One restore run of one instance. The restore id names the run: calling again with the
/// same id resumes it.
#[derive(Clone, Debug)]
pub struct InstanceRestore<'a> {
    pub backup_id: &'a str,
    pub entry: &'a InstanceBackup,
    pub restore_id: &'a str,
    pub mode: InstanceRestoreMode,
}

/// A device put back by a swap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredVolume {
    pub device: String,
    pub snapshot_id: String,
    /// The volume created from the snapshot, now attached.
    pub volume_id: String,
    /// The volume that was attached before, kept (tagged) for forensics.
    pub replaced_volume_id: Option<String>,
}

/// What one step did and where the restore stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestoreStep {
    pub instance_id: String,
    pub restore_id: String,
    pub done: bool,
    /// What the restore is doing or waiting on.
    pub phase: RestorePhase,
    /// The mutating calls this step made, e.g. `StopInstances i-…`.
    pub actions: Vec<String>,
    /// Swap: each device's new and replaced volume (complete once `done`).
    pub volumes: Vec<RestoredVolume>,
    /// Replace-root: the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_root_task_id: Option<String>,
}

/// Where one instance's restore stands. Written as text (`stopping instance`, …) in reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum RestorePhase {
    /// Nothing looked at yet.
    Starting,
    /// Every device is back and the instance runs.
    Completed,
    StartingInstance,
    /// The instance is in this state, on its way to running.
    WaitingToRun(InstanceStateName),
    StoppingInstance,
    /// The instance is in this state, on its way to stopped.
    WaitingToStop(InstanceStateName),
    /// Volumes are being created for these devices.
    CreatingVolumes(Vec<String>),
    /// Volumes are detaching and attaching; what each device still waits on.
    SwappingVolumes(Vec<String>),
    /// The replace-root-volume task is in this state.
    ReplacingRoot {
        task_id: String,
        state: ReplaceRootVolumeTaskState,
    },
}

impl std::fmt::Display for RestorePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestorePhase::Starting => f.write_str("starting"),
            RestorePhase::Completed => f.write_str("completed"),
            RestorePhase::StartingInstance => f.write_str("starting instance"),
            RestorePhase::WaitingToRun(s) => {
                write!(f, "waiting for the instance ({}) to run", s.as_str())
            }
            RestorePhase::StoppingInstance => f.write_str("stopping instance"),
            RestorePhase::WaitingToStop(s) => {
                write!(f, "waiting for the instance ({}) to stop", s.as_str())
            }
            RestorePhase::CreatingVolumes(devices) => {
                write!(f, "creating volumes for {}", devices.join(", "))
            }
            RestorePhase::SwappingVolumes(waiting) if waiting.is_empty() => {
                f.write_str("swapping volumes")
            }
            RestorePhase::SwappingVolumes(waiting) => {
                write!(f, "swapping volumes ({})", waiting.join(", "))
            }
            RestorePhase::ReplacingRoot { task_id, state } => write!(
                f,
                "replacing the root volume (task {task_id} {})",
                state.as_str()
            ),
        }
    }
}

impl From<RestorePhase> for String {
    fn from(p: RestorePhase) -> String {
        p.to_string()
    }
}

impl RestoreStep {
    fn start(instance_id: &str, restore_id: &str) -> Self {
        RestoreStep {
            instance_id: instance_id.to_string(),
            restore_id: restore_id.to_string(),
            done: false,
            phase: RestorePhase::Starting,
            actions: Vec::new(),
            volumes: Vec::new(),
            replace_root_task_id: None,
        }
    }
}

/// Checks what a restore may start from: a completed backup of an instance that still exists.
fn check_restorable(r: &InstanceRestore<'_>) -> Result<(), Error> {
    check_segment("restore id", r.restore_id)?;
    if r.entry.state != BackupState::Completed {
        return Err(Error::BackupNotUsable {
            backup_id: r.backup_id.to_string(),
            state: r.entry.state.to_string(),
        });
    }
    Ok(())
}

/// `InstanceRestoreFailed` unless each of `snapshots` (and `image`) carries this backup's id
/// tag, which Backstop gives everything it creates: a manifest naming someone else's snapshot
/// or image restores nothing and touches nothing.
async fn ensure_backup_tagged(
    ec2: &Ec2,
    r: &InstanceRestore<'_>,
    snapshots: &[String],
    image: Option<&str>,
) -> Result<(), Error> {
    let refused = |what: String| Error::InstanceRestoreFailed {
        instance_id: r.entry.instance_id.clone(),
        reason: format!(
            "{what} does not carry this backup's tag {TAG_BACKUP_ID}={}: not restored from",
            r.backup_id
        ),
    };
    let ours = ec2.snapshots_of_backup(snapshots, r.backup_id).await?;
    if let Some(s) = snapshots.iter().find(|s| !ours.contains(s)) {
        return Err(refused(format!("snapshot {s}")));
    }
    if let Some(image) = image {
        if ec2.image_of_backup(image, r.backup_id).await?.is_none() {
            return Err(refused(format!("image {image}")));
        }
    }
    Ok(())
}

/// Reads the current state, does what is still missing, and reports.
pub async fn restore_instance_step(
    ec2: &Ec2,
    r: &InstanceRestore<'_>,
) -> Result<RestoreStep, Error> {
    check_restorable(r)?;
    let instance = ec2.instance(&r.entry.instance_id).await?;
    match r.mode {
        InstanceRestoreMode::SwapVolumes => swap_step(ec2, r, &instance).await,
        InstanceRestoreMode::ReplaceRoot => replace_root_step(ec2, r, &instance).await,
    }
}

async fn swap_step(
    ec2: &Ec2,
    r: &InstanceRestore<'_>,
    instance: &InstanceView,
) -> Result<RestoreStep, Error> {
    let id = &instance.instance_id;
    let mut step = RestoreStep::start(id, r.restore_id);
    let mut wanted = Vec::new();
    for v in &r.entry.volumes {
        let Some(snapshot) = &v.snapshot_id else {
            return Err(Error::BackupNotUsable {
                backup_id: r.backup_id.to_string(),
                state: format!("missing the snapshot of {}", v.device),
            });
        };
        wanted.push((v, snapshot.clone()));
    }
    // Volumes this restore created, by device.
    let mut created: BTreeMap<String, Volume> = BTreeMap::new();
    for v in ec2
        .volumes_tagged(&[(TAG_RESTORE_ID, r.restore_id), (TAG_INSTANCE_ID, id)])
        .await?
    {
        if let Some(d) = tag_value(v.tags(), TAG_DEVICE) {
            created.entry(d.to_string()).or_insert(v);
        }
    }
    let attached_ids: Vec<String> = instance.devices.values().cloned().collect();
    let attached: BTreeMap<String, Volume> = ec2
        .volumes(&attached_ids)
        .await?
        .into_iter()
        .filter_map(|v| Some((v.volume_id()?.to_string(), v)))
        .collect();
    let current = |device: &str| instance.devices.get(device).cloned();
    let swapped = |created: &BTreeMap<String, Volume>, device: &str| {
        let new = created.get(device).and_then(|v| v.volume_id());
        new.is_some() && current(device).as_deref() == new
    };
    let replaced_ids = replaced_volumes(ec2, r.restore_id, id).await?;
    let report = |step: &mut RestoreStep, created: &BTreeMap<String, Volume>| {
        step.volumes = wanted
            .iter()
            .filter_map(|(v, snapshot)| {
                Some(RestoredVolume {
                    device: v.device.clone(),
                    snapshot_id: snapshot.clone(),
                    volume_id: created.get(&v.device)?.volume_id()?.to_string(),
                    replaced_volume_id: replaced_ids.get(&v.device).cloned(),
                })
            })
            .collect();
    };

    if wanted.iter().all(|(v, _)| swapped(&created, &v.device)) {
        report(&mut step, &created);
        match &instance.state {
            InstanceStateName::Running => {
                step.done = true;
                step.phase = RestorePhase::Completed;
            }
            InstanceStateName::Stopped => start_instance(ec2, id, &mut step).await?,
            other => step.phase = RestorePhase::WaitingToRun(other.clone()),
        }
        return Ok(step);
    }

    // Before the instance is touched: every snapshot must be this backup's.
    let snapshots: Vec<String> = wanted.iter().map(|(_, s)| s.clone()).collect();
    ensure_backup_tagged(ec2, r, &snapshots, None).await?;
    match &instance.state {
        InstanceStateName::Stopped => {}
        InstanceStateName::Running | InstanceStateName::Pending => {
            ec2.call("StopInstances", |c| {
                c.stop_instances().instance_ids(id).send()
            })
            .await?;
            step.actions.push(format!("StopInstances {id}"));
            step.phase = RestorePhase::StoppingInstance;
            return Ok(step);
        }
        other => {
            step.phase = RestorePhase::WaitingToStop(other.clone());
            return Ok(step);
        }
    }

    // The instance is stopped: create what is missing.
    for (v, snapshot) in &wanted {
        if created.contains_key(&v.device) {
            continue;
        }
        let mut tags = vec![
            (TAG_BACKUP_ID.to_string(), r.backup_id.to_string()),
            (TAG_RESTORE_ID.to_string(), r.restore_id.to_string()),
            (TAG_INSTANCE_ID.to_string(), id.clone()),
            (TAG_DEVICE.to_string(), v.device.clone()),
        ];
        if let Some(old) = current(&v.device).and_then(|o| attached.get(&o)) {
            tags.extend(copyable_tags(old.tags(), tags.len()));
        }
        let volume_type = VolumeType::from(v.volume_type.as_str());
        let iops = v
            .iops
            .filter(|_| matches!(v.volume_type.as_str(), "io1" | "io2" | "gp3"));
        let throughput = v.throughput.filter(|_| v.volume_type == "gp3");
        let out = ec2
            .call("CreateVolume", |c| {
                c.create_volume()
                    .availability_zone(&instance.availability_zone)
                    .snapshot_id(snapshot)
                    .volume_type(volume_type.clone())
                    .size(v.size_gib)
                    .set_iops(iops)
                    .set_throughput(throughput)
                    .set_encrypted(v.encrypted.then_some(true))
                    .set_kms_key_id(v.kms_key_id.clone().filter(|_| v.encrypted))
                    // An SDK retry of a create that went through returns that volume, not a
                    // second one nothing would attach or prune.
                    .client_token(client_token(&["CreateVolume", r.restore_id, id, &v.device]))
                    .tag_specifications(tag_spec(ResourceType::Volume, &tags))
                    .send()
            })
            .await?;
        let new_id = out.volume_id().unwrap_or_default().to_string();
        step.actions.push(format!(
            "CreateVolume {} from {snapshot}: {new_id}",
            v.device
        ));
        let vol = Volume::builder()
            .volume_id(new_id)
            .set_state(out.state().cloned())
            .build();
        created.insert(v.device.clone(), vol);
    }
    let creating: Vec<String> = wanted
        .iter()
        .filter_map(|(v, _)| {
            let vol = created.get(&v.device)?;
            (vol.state() == Some(&VolumeState::Creating)).then(|| v.device.clone())
        })
        .collect();
    if let Some((device, vol)) = wanted.iter().find_map(|(v, _)| {
        let vol = created.get(&v.device)?;
        (vol.state() == Some(&VolumeState::Error)).then_some((&v.device, vol))
    }) {
        return Err(Error::InstanceRestoreFailed {
            instance_id: id.clone(),
            reason: format!(
                "the volume {} created for {device} is in error; the instance is stopped \
                 with its volumes as they were",
                vol.volume_id().unwrap_or("?")
            ),
        });
    }
    if !creating.is_empty() {
        report(&mut step, &created);
        step.phase = RestorePhase::CreatingVolumes(creating);
        return Ok(step);
    }

    // Swap each device that does not carry its new volume yet.
    let mut waiting = Vec::new();
    for (v, _) in &wanted {
        if swapped(&created, &v.device) {
            continue;
        }
        let Some(new) = created.get(&v.device).and_then(|n| n.volume_id()) else {
            continue;
        };
        match current(&v.device) {
            Some(old) => {
                let detaching = attached
                    .get(&old)
                    .map(|o| {
                        o.attachments()
                            .iter()
                            .any(|a| a.state() == Some(&VolumeAttachmentState::Detaching))
                    })
                    .unwrap_or(false);
                if detaching {
                    waiting.push(format!("{} detaching", v.device));
                    continue;
                }
                let tagged = attached.get(&old).is_some_and(|o| {
                    tag_value(o.tags(), TAG_REPLACED_BY) == Some(new)
                        && tag_value(o.tags(), TAG_REPLACED_IN) == Some(r.restore_id)
                });
                if !tagged {
                    ec2.tag(
                        std::slice::from_ref(&old),
                        &[
                            (TAG_REPLACED_BY.to_string(), new.to_string()),
                            (
                                TAG_FAILED_STATE_OF.to_string(),
                                format!("{id}:{}", v.device),
                            ),
                            (TAG_REPLACED_IN.to_string(), r.restore_id.to_string()),
                        ],
                    )
                    .await?;
                    step.actions
                        .push(format!("CreateTags {old} {TAG_REPLACED_BY}={new}"));
                }
                ec2.call("DetachVolume", |c| {
                    c.detach_volume()
                        .volume_id(&old)
                        .instance_id(id)
                        .device(&v.device)
                        .send()
                })
                .await?;
                step.actions
                    .push(format!("DetachVolume {} {old}", v.device));
                waiting.push(format!("{} detaching", v.device));
            }
            None => {
                ec2.call("AttachVolume", |c| {
                    c.attach_volume()
                        .volume_id(new)
                        .instance_id(id)
                        .device(&v.device)
                        .send()
                })
                .await?;
                step.actions
                    .push(format!("AttachVolume {} {new}", v.device));
                waiting.push(format!("{} attaching", v.device));
            }
        }
    }
    report(&mut step, &created);
    step.phase = RestorePhase::SwappingVolumes(waiting);
    Ok(step)
}

/// Volumes this restore replaced, by device (from their `backstop:failed-state-of` tag).
async fn replaced_volumes(
    ec2: &Ec2,
    restore_id: &str,
    instance_id: &str,
) -> Result<BTreeMap<String, String>, Error> {
    let prefix = format!("{instance_id}:");
    Ok(ec2
        .volumes_tagged(&[(TAG_REPLACED_IN, restore_id)])
        .await?
        .iter()
        .filter_map(|v| {
            let device = tag_value(v.tags(), TAG_FAILED_STATE_OF)?.strip_prefix(&prefix)?;
            Some((device.to_string(), v.volume_id()?.to_string()))
        })
        .collect())
}

/// Starts the stopped instance `id`, recording it in `step`.
async fn start_instance(ec2: &Ec2, id: &str, step: &mut RestoreStep) -> Result<(), Error> {
    ec2.call("StartInstances", |c| {
        c.start_instances().instance_ids(id).send()
    })
    .await?;
    step.actions.push(format!("StartInstances {id}"));
    step.phase = RestorePhase::StartingInstance;
    Ok(())
}

async fn replace_root_step(
    ec2: &Ec2,
    r: &InstanceRestore<'_>,
    instance: &InstanceView,
) -> Result<RestoreStep, Error> {
    let id = &instance.instance_id;
    let mut step = RestoreStep::start(id, r.restore_id);
    let filter = Filter::builder().name("instance-id").values(id).build();
    let out = ec2
        .call("DescribeReplaceRootVolumeTasks", |c| {
            c.describe_replace_root_volume_tasks()
                .filters(filter.clone())
                .send()
        })
        .await?;
    let task = out
        .replace_root_volume_tasks()
        .iter()
        .find(|t| tag_value(t.tags(), TAG_RESTORE_ID) == Some(r.restore_id))
        .cloned();
    let task = match task {
        Some(t) => t,
        None => {
            // EC2 replaces the root volume of a running instance only (IncorrectState
            // otherwise): a stopped instance is started first, one on its way is waited for.
            match &instance.state {
                InstanceStateName::Running => {}
                InstanceStateName::Stopped => {
                    start_instance(ec2, id, &mut step).await?;
                    return Ok(step);
                }
                InstanceStateName::Pending | InstanceStateName::Stopping => {
                    step.phase = RestorePhase::WaitingToRun(instance.state.clone());
                    return Ok(step);
                }
                other => {
                    return Err(Error::InstanceRestoreFailed {
                        instance_id: id.clone(),
                        reason: format!(
                            "the instance is {}: its root volume cannot be replaced",
                            other.as_str()
                        ),
                    })
                }
            }
            let (snapshot, image) = match r.entry.mode {
                InstanceBackupMode::Image => (None, r.entry.image_id.clone()),
                InstanceBackupMode::Snapshots => {
                    let root = r
                        .entry
                        .volumes
                        .iter()
                        .find(|v| v.boot)
                        .and_then(|v| v.snapshot_id.clone());
                    if root.is_none() {
                        return Err(Error::InvalidInput(format!(
                            "backup {} holds no root volume snapshot of {id}: use swap-volumes",
                            r.backup_id
                        )));
                    }
                    (root, None)
                }
            };
            ensure_backup_tagged(ec2, r, snapshot.as_slice(), image.as_deref()).await?;
            let tags = vec![
                (TAG_BACKUP_ID.to_string(), r.backup_id.to_string()),
                (TAG_RESTORE_ID.to_string(), r.restore_id.to_string()),
                (TAG_INSTANCE_ID.to_string(), id.clone()),
            ];
            let created = ec2
                .call("CreateReplaceRootVolumeTask", |c| {
                    c.create_replace_root_volume_task()
                        .instance_id(id)
                        .set_snapshot_id(snapshot.clone())
                        .set_image_id(image.clone())
                        .delete_replaced_root_volume(false)
                        .client_token(client_token(&[
                            "CreateReplaceRootVolumeTask",
                            r.restore_id,
                            id,
                        ]))
                        .tag_specifications(tag_spec(ResourceType::ReplaceRootVolumeTask, &tags))
                        .send()
                })
                .await?;
            let task = created
                .replace_root_volume_task()
                .cloned()
                .ok_or_else(|| Error::Ec2 {
                    operation: "CreateReplaceRootVolumeTask",
                    code: "-".to_string(),
                    reason: "the response carries no task".to_string(),
                    source: None,
                })?;
            step.actions.push(format!(
                "CreateReplaceRootVolumeTask {id} from {}: {}",
                snapshot.or(image).unwrap_or_default(),
                task.replace_root_volume_task_id().unwrap_or("?")
            ));
            task
        }
    };
    let task_id = task
        .replace_root_volume_task_id()
        .unwrap_or("?")
        .to_string();
    step.replace_root_task_id = Some(task_id.clone());
    let state = task
        .task_state()
        .cloned()
        .unwrap_or(ReplaceRootVolumeTaskState::Pending);
    match state {
        ReplaceRootVolumeTaskState::Succeeded => {
            step.done = true;
            step.phase = RestorePhase::Completed;
        }
        ReplaceRootVolumeTaskState::Failing
        | ReplaceRootVolumeTaskState::Failed
        | ReplaceRootVolumeTaskState::FailedDetached => {
            return Err(Error::InstanceRestoreFailed {
                instance_id: id.clone(),
                reason: format!(
                    "replace-root-volume task {task_id} is {}; the original root volume \
                     is kept",
                    state.as_str()
                ),
            });
        }
        other => {
            step.phase = RestorePhase::ReplacingRoot {
                task_id: task_id.clone(),
                state: other,
            }
        }
    }
    Ok(step)
}

/// Runs the restore's steps until it is done, sleeping the policy's backed-off wait while
/// AWS works and going on at once after a step that made calls.
pub async fn restore_instance(
    ec2: &Ec2,
    r: &InstanceRestore<'_>,
    policy: &PollPolicy,
    progress: &dyn Progress,
) -> Result<RestoreStep, Error> {
    let started = std::time::Instant::now();
    let mut actions = Vec::new();
    progress.start(&format!("restore {}", r.entry.instance_id), None);
    loop {
        let mut step = restore_instance_step(ec2, r).await?;
        let acted = !step.actions.is_empty();
        actions.append(&mut step.actions);
        if step.done {
            progress.finish();
            step.actions = actions;
            return Ok(step);
        }
        progress.note(&step.phase.to_string());
        if acted {
            continue;
        }
        let elapsed = started.elapsed();
        if policy.expired(elapsed) {
            progress.finish();
            return Err(Error::TimedOut {
                operation: format!(
                    "restore {} of {} (at: {}; rerun with the same restore id to resume)",
                    r.restore_id, r.entry.instance_id, step.phase
                ),
                seconds: elapsed.as_secs(),
            });
        }
        tokio::time::sleep(policy.next_wait(elapsed)).await;
    }
}
