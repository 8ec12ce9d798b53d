//! `backstop ec2 backup|status|restore`: instances backed up as crash-consistent snapshot sets
//! or images (and waited for), a backup's instances polled once, instances put back by
//! swapping volumes or replacing the root, resumable by restore id.

use backstop_core::aws::ec2::Ec2;
use backstop_core::aws::load_config;
use backstop_core::instance::backup::{
    poll_instance_backup, record_outcome, start_instances, wait_for_backup, InstanceBackupRequest,
};
use backstop_core::instance::restore::{restore_instance, InstanceRestore};
use backstop_core::model::job::InstanceJob;
use backstop_core::model::manifest::{
    new_backup_id, BackupState, InstanceBackup, InstanceBackupMode,
};
use backstop_core::model::poll::{JobStatus, PollPolicy};
use backstop_core::model::run::InstanceRestoreMode;
use backstop_core::Error;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::cli::{key_value, CatalogArgs};
use crate::progress::Bar;
use crate::render;

#[derive(Subcommand)]
pub enum Ec2Command {
    /// Snapshot every attached EBS volume of the instances as one crash-consistent set (or
    /// create an image), record them in the catalog, and wait until they complete.
    Backup(BackupArgs),
    /// Poll a backup's snapshots or images once, record the outcome, print each instance's
    /// status (PENDING with progress, COMPLETED, FAILED, TIMED_OUT).
    Status(StatusArgs),
    /// Put instances back to a backup: swap in volumes created from its snapshots (or replace
    /// the root volume), keeping the replaced volumes. Resumable with --restore-id.
    Restore(RestoreArgs),
}

#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    /// Instance to back up (repeatable).
    #[arg(long = "instance-id")]
    instance_ids: Vec<String>,
    /// Back up the instances carrying this tag, KEY=VALUE (repeatable; all must match).
    #[arg(long = "tag", value_parser = key_value)]
    tags: Vec<(String, String)>,
    /// snapshots (CreateSnapshots, crash-consistent across volumes) or image (CreateImage).
    #[arg(long, default_value = "snapshots")]
    mode: InstanceBackupMode,
    /// Application the backup belongs to (default: the instance id, when there is one).
    #[arg(long)]
    application: Option<String>,
    /// Application version or commit being protected (tagged backstop:commit).
    #[arg(long)]
    app_version: Option<String>,
    /// Reuse this backup id: a retried call finds what the first one created.
    #[arg(long)]
    backup_id: Option<String>,
    /// Snapshots mode: leave out the boot volume.
    #[arg(long)]
    exclude_boot: bool,
    /// Snapshots mode: only this device, e.g. /dev/sdf (repeatable).
    #[arg(long = "device")]
    devices: Vec<String>,
    /// Image mode: reboot the instance for a file-system-consistent image (default: no reboot).
    #[arg(long)]
    reboot: bool,
    /// Return once the snapshots are started; `ec2 status` follows them.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting (TIMED_OUT, snapshots deleted) this many seconds after the start.
    #[arg(long, default_value_t = 7200)]
    timeout: u64,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    #[arg(long)]
    backup_id: String,
    /// The deadline, in seconds after the backup started, past which a pending backup is TIMED_OUT.
    #[arg(long, default_value_t = 7200)]
    timeout: u64,
}

#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    #[arg(long)]
    backup_id: String,
    /// Restore only this instance of the backup.
    #[arg(long)]
    instance_id: Option<String>,
    /// swap-volumes (any volume) or replace-root (a replace-root-volume task, old root kept).
    #[arg(long, default_value = "swap-volumes")]
    mode: InstanceRestoreMode,
    /// Resume an interrupted restore: the id it printed.
    #[arg(long)]
    restore_id: Option<String>,
    /// Give up waiting after this many seconds (rerun with the restore id to resume).
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

/// One instance's status, as `ec2 status --json` prints it.
#[derive(Serialize)]
pub struct InstanceStatus {
    pub instance_id: String,
    #[serde(flatten)]
    pub status: JobStatus,
}

pub async fn run(cmd: Ec2Command, json: bool) -> Result<(), Error> {
    let ec2 = Ec2::from_config(&load_config().await);
    let bar = Bar::for_stderr();
    match cmd {
        Ec2Command::Backup(args) => backup(&ec2, args, json, &bar).await,
        Ec2Command::Status(args) => status(&ec2, args, json).await,
        Ec2Command::Restore(args) => restore(&ec2, args, json, &bar).await,
    }
}

async fn backup(ec2: &Ec2, args: BackupArgs, json: bool, bar: &Bar) -> Result<(), Error> {
    let catalog = args.catalog.catalog().await?;
    let application = match (&args.application, args.instance_ids.as_slice()) {
        (Some(a), _) => a.clone(),
        (None, [one]) if args.tags.is_empty() => one.clone(),
        _ => {
            return Err(Error::InvalidInput(
                "name the --application of a backup of several or tagged instances".to_string(),
            ))
        }
    };
    let now = time::OffsetDateTime::now_utc();
    let backup_id = args.backup_id.unwrap_or_else(|| new_backup_id(now));
    let mut req = InstanceBackupRequest::new(&backup_id, &application, args.mode);
    req.commit = args.app_version;
    req.exclude_boot = args.exclude_boot;
    req.devices = args.devices;
    req.no_reboot = !args.reboot;
    catalog.store.check_bucket().await?;
    let (manifest, jobs) =
        start_instances(ec2, &catalog, &req, &args.instance_ids, &args.tags, now).await?;
    if !json {
        eprintln!(
            "backup {backup_id}: started for {}",
            render::instances_started(&manifest.instances, &jobs)
        );
    }
    let manifest = if args.no_wait {
        manifest
    } else {
        let policy = PollPolicy {
            deadline_seconds: args.timeout,
            ..PollPolicy::default()
        };
        wait_for_backup(ec2, &catalog, &jobs, &policy, bar).await?
    };
    if json {
        render::json(&manifest);
    } else {
        println!("{}", manifest.backup_id);
    }
    Ok(())
}

async fn status(ec2: &Ec2, args: StatusArgs, json: bool) -> Result<(), Error> {
    let catalog = args.catalog.catalog().await?;
    let manifest = catalog.find(&args.backup_id).await?;
    let policy = PollPolicy {
        deadline_seconds: args.timeout,
        ..PollPolicy::default()
    };
    let now = time::OffsetDateTime::now_utc();
    let mut statuses = Vec::new();
    for entry in &manifest.instances {
        let status = match entry.state {
            BackupState::Completed => JobStatus::Completed,
            BackupState::Failed => JobStatus::Failed {
                reason: entry.error.clone().unwrap_or_default(),
            },
            BackupState::Pending => {
                let job = InstanceJob::of(
                    &manifest.backup_id,
                    &manifest.application,
                    entry,
                    manifest.started_at,
                );
                let status = poll_instance_backup(ec2, &job, &policy, now).await?;
                record_outcome(ec2, &catalog, &job, &status, now).await?;
                status
            }
        };
        statuses.push(InstanceStatus {
            instance_id: entry.instance_id.clone(),
            status,
        });
    }
    if json {
        render::json(&serde_json::json!({
            "backup_id": manifest.backup_id,
            "instances": statuses,
        }));
    } else {
        render::instance_statuses(&statuses);
    }
    match statuses.iter().find_map(|s| match &s.status {
        JobStatus::Failed { reason } => Some((s, reason.clone())),
        JobStatus::TimedOut { .. } => Some((s, "timed out".to_string())),
        _ => None,
    }) {
        Some((bad, reason)) => Err(Error::InstanceBackupFailed {
            backup_id: manifest.backup_id.clone(),
            instance_id: bad.instance_id.clone(),
            reason,
        }),
        None => Ok(()),
    }
}

async fn restore(ec2: &Ec2, args: RestoreArgs, json: bool, bar: &Bar) -> Result<(), Error> {
    let catalog = args.catalog.catalog().await?;
    let manifest = catalog.find(&args.backup_id).await?;
    let entries: Vec<&InstanceBackup> = match &args.instance_id {
        Some(id) => vec![manifest.instance(id)?],
        None if manifest.instances.is_empty() => {
            return Err(manifest
                .instance("(any)")
                .err()
                .unwrap_or(Error::InvalidInput(
                    "the backup holds no instances".to_string(),
                )))
        }
        None => manifest.instances.iter().collect(),
    };
    for entry in &entries {
        if entry.state != BackupState::Completed {
            return Err(Error::BackupNotUsable {
                backup_id: manifest.backup_id.clone(),
                state: format!("{} for {}", entry.state, entry.instance_id),
            });
        }
    }
    let restore_id = args
        .restore_id
        .unwrap_or_else(|| format!("restore-{}", new_backup_id(time::OffsetDateTime::now_utc())));
    if !json {
        eprintln!("restore id {restore_id} (rerun with --restore-id {restore_id} to resume)");
    }
    let policy = PollPolicy {
        first_wait_seconds: 5,
        max_wait_seconds: 30,
        deadline_seconds: args.timeout,
    };
    let mut steps = Vec::new();
    for entry in entries {
        let r = InstanceRestore {
            backup_id: &manifest.backup_id,
            entry,
            restore_id: &restore_id,
            mode: args.mode,
        };
        let step = restore_instance(ec2, &r, &policy, bar).await?;
        if !json {
            render::instance_restored(&step, &manifest.backup_id, args.mode);
        }
        steps.push(step);
    }
    if json {
        render::json(&steps);
    }
    Ok(())
}
