//! EC2 behaviour no emulator reproduces, simulated with aws-smithy-mocks (each test is named
//! `mocked_…` for the scenario it simulates): snapshots that stay pending and report progress,
//! the 99% multi-volume set, a snapshot in `error`, throttling (retried by the SDK's standard
//! retry, the only retry layer, then named `Throttled`), replace-root-volume tasks, the poll
//! deadline, and a swap restore interrupted at every call and resumed. The restore runs
//! against a small stateful EC2 world built from mock rules, so the calls each run makes can
//! be counted exactly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::attach_volume::{AttachVolumeError, AttachVolumeOutput};
use aws_sdk_ec2::operation::create_replace_root_volume_task::CreateReplaceRootVolumeTaskOutput;
use aws_sdk_ec2::operation::create_snapshots::{CreateSnapshotsError, CreateSnapshotsOutput};
use aws_sdk_ec2::operation::create_tags::{CreateTagsError, CreateTagsOutput};
use aws_sdk_ec2::operation::create_volume::{CreateVolumeError, CreateVolumeOutput};
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_instances::{DescribeInstancesError, DescribeInstancesOutput};
use aws_sdk_ec2::operation::describe_replace_root_volume_tasks::DescribeReplaceRootVolumeTasksOutput;
use aws_sdk_ec2::operation::describe_snapshots::{DescribeSnapshotsError, DescribeSnapshotsOutput};
use aws_sdk_ec2::operation::describe_volumes::DescribeVolumesOutput;
use aws_sdk_ec2::operation::detach_volume::{DetachVolumeError, DetachVolumeOutput};
use aws_sdk_ec2::operation::start_instances::{StartInstancesError, StartInstancesOutput};
use aws_sdk_ec2::operation::stop_instances::{StopInstancesError, StopInstancesOutput};
use aws_sdk_ec2::types::{
    EbsInstanceBlockDevice, Image, ImageState, Instance, InstanceBlockDeviceMapping, InstanceState,
    InstanceStateName, Placement, ReplaceRootVolumeTask, ReplaceRootVolumeTaskState, Reservation,
    Snapshot, SnapshotInfo, SnapshotState, StateReason, Tag, Volume, VolumeAttachment,
    VolumeAttachmentState, VolumeState, VolumeType,
};
use aws_sdk_ec2::Client;
use aws_smithy_mocks::{create_mock_http_client, mock, mock_client, MockResponse, Rule, RuleMode};

use crate::support::limits_checked;
use backstop_core::aws::ec2::{client_token, Ec2, InstanceView};
use backstop_core::instance::backup::{
    poll_instance_backup, start_instance_backup, InstanceBackupRequest,
};
use backstop_core::instance::restore::{restore_instance_step, InstanceRestore, RestoreStep};
use backstop_core::model::job::InstanceJob;
use backstop_core::model::manifest::{
    BackupState, InstanceBackup, InstanceBackupMode, VolumeBackup,
};
use backstop_core::model::poll::{JobStatus, PollPolicy};
use backstop_core::model::run::InstanceRestoreMode;
use backstop_core::Error;
use time::macros::datetime;
use time::OffsetDateTime;

const BACKUP: &str = "20261125T120000Z-0badc0de";
const STARTED: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);

/// Requests per call: the SDK's standard retry, as configured for these clients.
const ATTEMPTS: u32 = 4;
/// A restore id as the pipeline gives it: the protect execution's name (`codepipeline-<uuid>`,
/// 49 characters), the longest kind the tests' restores carry.
const PIPELINE_RESTORE: &str = "codepipeline-0f3c2a4e-9b1d-4c8e-a6f2-7d5e9b3c1a20";

/// A client answering from `rules`, with the SDK's standard retry (the only retry layer) at
/// [`ATTEMPTS`] requests per call and millisecond backoff, so every request can be counted.
fn ec2(rules: &[&Rule]) -> Ec2 {
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, rules, |c| c
        .http_client(limits_checked(create_mock_http_client()))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(4))
        ));
    Ec2::new(client)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn meta(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(code)
        .message(format!("simulated {code}"))
        .build()
}

fn snapshot(id: &str, volume: &str, state: SnapshotState, progress: &str) -> Snapshot {
    Snapshot::builder()
        .snapshot_id(id)
        .volume_id(volume)
        .state(state)
        .progress(progress)
        .build()
}

fn snapshots(list: Vec<Snapshot>) -> DescribeSnapshotsOutput {
    DescribeSnapshotsOutput::builder()
        .set_snapshots(Some(list))
        .build()
}

fn job(snapshot_ids: &[&str]) -> InstanceJob {
    InstanceJob {
        backup_id: BACKUP.to_string(),
        application: "shop".to_string(),
        instance_id: "i-0a1b2c3d4e5f60718".to_string(),
        mode: InstanceBackupMode::Snapshots,
        snapshot_ids: snapshot_ids.iter().map(|s| s.to_string()).collect(),
        image_id: None,
        started_at: STARTED,
    }
}

fn at(seconds: i64) -> OffsetDateTime {
    STARTED + time::Duration::seconds(seconds)
}

#[test]
fn mocked_snapshot_set_pending_then_completed_reports_progress_and_backs_off() {
    let describe = mock!(Client::describe_snapshots)
        .sequence()
        .output(|| {
            snapshots(vec![
                snapshot("snap-1", "vol-1", SnapshotState::Pending, "10%"),
                snapshot("snap-2", "vol-2", SnapshotState::Pending, "20%"),
            ])
        })
        .output(|| {
            snapshots(vec![
                snapshot("snap-1", "vol-1", SnapshotState::Pending, "60%"),
                snapshot("snap-2", "vol-2", SnapshotState::Completed, "100%"),
            ])
        })
        .output(|| {
            snapshots(vec![
                snapshot("snap-1", "vol-1", SnapshotState::Completed, "100%"),
                snapshot("snap-2", "vol-2", SnapshotState::Completed, "100%"),
            ])
        })
        .build();
    let ec2 = ec2(&[&describe]);
    let job = job(&["snap-1", "snap-2"]);
    let policy = PollPolicy::default();
    let rt = rt();
    let first = rt
        .block_on(poll_instance_backup(&ec2, &job, &policy, at(5)))
        .unwrap();
    assert_eq!(
        first,
        JobStatus::Pending {
            progress: 15,
            // 15% after 5 s: about 28 s to go, longer than the 15 s backoff.
            next_wait_seconds: 28,
            detail: "0 of 2 snapshots completed".to_string()
        }
    );
    let second = rt
        .block_on(poll_instance_backup(&ec2, &job, &policy, at(100)))
        .unwrap();
    assert_eq!(
        second,
        JobStatus::Pending {
            progress: 80,
            next_wait_seconds: 100,
            detail: "1 of 2 snapshots completed".to_string()
        }
    );
    let third = rt
        .block_on(poll_instance_backup(&ec2, &job, &policy, at(1000)))
        .unwrap();
    assert_eq!(third, JobStatus::Completed);
    assert_eq!(describe.num_calls(), 3);
}

#[test]
fn mocked_multi_volume_set_stays_below_100_until_every_snapshot_completes() {
    // AWS reports a multi-volume set at 99-100% per volume while the set is still pending.
    let describe = mock!(Client::describe_snapshots)
        .sequence()
        .output(|| {
            snapshots(vec![
                snapshot("snap-1", "vol-1", SnapshotState::Completed, "100%"),
                snapshot("snap-2", "vol-2", SnapshotState::Pending, "100%"),
                snapshot("snap-3", "vol-3", SnapshotState::Pending, "99%"),
            ])
        })
        .times(3)
        .output(|| {
            snapshots(vec![
                snapshot("snap-1", "vol-1", SnapshotState::Completed, "100%"),
                snapshot("snap-2", "vol-2", SnapshotState::Completed, "100%"),
                snapshot("snap-3", "vol-3", SnapshotState::Completed, "100%"),
            ])
        })
        .build();
    let ec2 = ec2(&[&describe]);
    let job = job(&["snap-1", "snap-2", "snap-3"]);
    let rt = rt();
    for minute in 1..=3 {
        let status = rt
            .block_on(poll_instance_backup(
                &ec2,
                &job,
                &PollPolicy::default(),
                at(minute * 60),
            ))
            .unwrap();
        match status {
            JobStatus::Pending { progress, .. } => assert_eq!(progress, 99),
            other => panic!("a set with pending snapshots is not done: {other:?}"),
        }
    }
    let done = rt
        .block_on(poll_instance_backup(
            &ec2,
            &job,
            &PollPolicy::default(),
            at(400),
        ))
        .unwrap();
    assert_eq!(done, JobStatus::Completed);
}

#[test]
fn mocked_snapshot_in_error_state_fails_the_job_with_its_reason() {
    let describe = mock!(Client::describe_snapshots).then_output(|| {
        snapshots(vec![
            snapshot("snap-1", "vol-1", SnapshotState::Completed, "100%"),
            Snapshot::builder()
                .snapshot_id("snap-2")
                .volume_id("vol-2")
                .state(SnapshotState::Error)
                .state_message("Internal error creating the snapshot")
                .progress("37%")
                .build(),
        ])
    });
    let ec2 = ec2(&[&describe]);
    let status = rt()
        .block_on(poll_instance_backup(
            &ec2,
            &job(&["snap-1", "snap-2"]),
            &PollPolicy::default(),
            at(60),
        ))
        .unwrap();
    match status {
        JobStatus::Failed { reason } => {
            assert!(reason.contains("snap-2"), "{reason}");
            assert!(reason.contains("vol-2"), "{reason}");
            assert!(
                reason.contains("Internal error creating the snapshot"),
                "{reason}"
            );
        }
        other => panic!("expected FAILED, got {other:?}"),
    }
}

#[test]
fn mocked_image_in_failed_state_fails_the_job_with_its_reason() {
    let describe = mock!(Client::describe_images).then_output(|| {
        DescribeImagesOutput::builder()
            .images(
                Image::builder()
                    .image_id("ami-1")
                    .state(ImageState::Failed)
                    .state_reason(
                        StateReason::builder()
                            .code("Client.Error")
                            .message("the instance's volume could not be read")
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let ec2 = ec2(&[&describe]);
    let mut job = job(&[]);
    job.mode = InstanceBackupMode::Image;
    job.image_id = Some("ami-1".to_string());
    let status = rt()
        .block_on(poll_instance_backup(
            &ec2,
            &job,
            &PollPolicy::default(),
            at(60),
        ))
        .unwrap();
    assert_eq!(
        status,
        JobStatus::Failed {
            reason: "image ami-1 is failed: the instance's volume could not be read".to_string()
        }
    );
}

#[test]
fn mocked_deadline_passed_while_pending_is_timed_out_but_a_late_completion_still_counts() {
    let pending = mock!(Client::describe_snapshots)
        .sequence()
        .output(|| {
            snapshots(vec![snapshot(
                "snap-1",
                "vol-1",
                SnapshotState::Pending,
                "40%",
            )])
        })
        .times(2)
        .output(|| {
            snapshots(vec![snapshot(
                "snap-1",
                "vol-1",
                SnapshotState::Completed,
                "100%",
            )])
        })
        .build();
    let ec2 = ec2(&[&pending]);
    let policy = PollPolicy {
        deadline_seconds: 3600,
        ..PollPolicy::default()
    };
    let job = job(&["snap-1"]);
    let rt = rt();
    let before = rt
        .block_on(poll_instance_backup(&ec2, &job, &policy, at(3590)))
        .unwrap();
    assert_eq!(
        before,
        JobStatus::Pending {
            progress: 40,
            next_wait_seconds: 10,
            detail: "0 of 1 snapshots completed".to_string()
        },
        "the suggested wait never runs past the deadline"
    );
    let after = rt
        .block_on(poll_instance_backup(&ec2, &job, &policy, at(3600)))
        .unwrap();
    assert_eq!(
        after,
        JobStatus::TimedOut {
            waited_seconds: 3600
        }
    );
    let late = rt
        .block_on(poll_instance_backup(&ec2, &job, &policy, at(4000)))
        .unwrap();
    assert_eq!(late, JobStatus::Completed);
}

fn instance_view() -> InstanceView {
    InstanceView {
        instance_id: "i-0a1b2c3d4e5f60718".to_string(),
        availability_zone: "eu-west-1b".to_string(),
        state: InstanceStateName::Running,
        root_device: Some("/dev/xvda".to_string()),
        devices: [
            ("/dev/xvda".to_string(), "vol-root".to_string()),
            ("/dev/sdf".to_string(), "vol-data".to_string()),
        ]
        .into_iter()
        .collect(),
    }
}

fn describe_two_volumes() -> Rule {
    mock!(Client::describe_volumes).then_output(|| {
        DescribeVolumesOutput::builder()
            .volumes(
                Volume::builder()
                    .volume_id("vol-root")
                    .size(8)
                    .volume_type(VolumeType::Gp3)
                    .iops(3000)
                    .throughput(125)
                    .encrypted(false)
                    .tags(Tag::builder().key("Name").value("shop-root").build())
                    .build(),
            )
            .volumes(
                Volume::builder()
                    .volume_id("vol-data")
                    .size(100)
                    .volume_type(VolumeType::Io2)
                    .iops(8000)
                    .encrypted(true)
                    .kms_key_id("arn:aws:kms:eu-west-1:111122223333:key/k1")
                    .build(),
            )
            .build()
    })
}

fn created_set() -> CreateSnapshotsOutput {
    CreateSnapshotsOutput::builder()
        .snapshots(
            SnapshotInfo::builder()
                .snapshot_id("snap-root")
                .volume_id("vol-root")
                .build(),
        )
        .snapshots(
            SnapshotInfo::builder()
                .snapshot_id("snap-data")
                .volume_id("vol-data")
                .build(),
        )
        .build()
}

#[test]
fn mocked_throttled_create_snapshots_is_retried_and_the_set_is_recorded() {
    let volumes = describe_two_volumes();
    let existing = mock!(Client::describe_snapshots).then_output(|| snapshots(vec![]));
    let create = mock!(Client::create_snapshots)
        .sequence()
        .error(|| CreateSnapshotsError::generic(meta("RequestLimitExceeded")))
        .times(2)
        .output(created_set)
        .build();
    let tags = mock!(Client::create_tags).then_output(|| CreateTagsOutput::builder().build());
    let ec2 = ec2(&[&volumes, &existing, &create, &tags]);
    let req = InstanceBackupRequest::new(BACKUP, "shop", InstanceBackupMode::Snapshots);
    let entry = rt()
        .block_on(start_instance_backup(&ec2, &req, &instance_view()))
        .unwrap();
    assert_eq!(
        create.num_calls(),
        3,
        "two throttled calls, then the one that worked"
    );
    assert_eq!(entry.state, BackupState::Pending);
    assert_eq!(entry.availability_zone, "eu-west-1b");
    let data = entry
        .volumes
        .iter()
        .find(|v| v.device == "/dev/sdf")
        .unwrap();
    assert_eq!(data.snapshot_id.as_deref(), Some("snap-data"));
    assert_eq!(data.volume_type, "io2");
    assert_eq!(data.iops, Some(8000));
    assert!(data.encrypted);
    assert_eq!(
        data.kms_key_id.as_deref(),
        Some("arn:aws:kms:eu-west-1:111122223333:key/k1")
    );
    assert!(!data.boot);
    let root = entry.volumes.iter().find(|v| v.boot).unwrap();
    assert_eq!(root.snapshot_id.as_deref(), Some("snap-root"));
    assert_eq!(root.throughput, Some(125));
    assert_eq!(tags.num_calls(), 2, "each snapshot gets its volume's tags");
}

#[test]
fn mocked_create_snapshots_throttled_through_every_retry_is_throttled() {
    let volumes = describe_two_volumes();
    let existing = mock!(Client::describe_snapshots).then_output(|| snapshots(vec![]));
    let create = mock!(Client::create_snapshots)
        .then_error(|| CreateSnapshotsError::generic(meta("RequestLimitExceeded")));
    let ec2 = ec2(&[&volumes, &existing, &create]);
    let req = InstanceBackupRequest::new(BACKUP, "shop", InstanceBackupMode::Snapshots);
    let err = rt()
        .block_on(start_instance_backup(&ec2, &req, &instance_view()))
        .unwrap_err();
    assert_eq!(err.error_type(), "Throttled", "{err}");
    assert_eq!(
        err.to_string(),
        format!("EC2 CreateSnapshots was still throttled after {ATTEMPTS} attempts")
    );
    assert_eq!(create.num_calls(), ATTEMPTS as usize);
}

#[test]
fn mocked_describe_snapshots_throttled_is_retried_then_throttled_when_it_persists() {
    let flaky = mock!(Client::describe_snapshots)
        .sequence()
        .error(|| DescribeSnapshotsError::generic(meta("RequestLimitExceeded")))
        .times(3)
        .output(|| {
            snapshots(vec![snapshot(
                "snap-1",
                "vol-1",
                SnapshotState::Completed,
                "100%",
            )])
        })
        .build();
    let rt = rt();
    let status = rt
        .block_on(poll_instance_backup(
            &ec2(&[&flaky]),
            &job(&["snap-1"]),
            &PollPolicy::default(),
            at(60),
        ))
        .unwrap();
    assert_eq!(status, JobStatus::Completed);
    assert_eq!(
        flaky.num_calls(),
        4,
        "three throttled requests, then the one that worked"
    );

    let stuck = mock!(Client::describe_snapshots)
        .then_error(|| DescribeSnapshotsError::generic(meta("Throttling")));
    let err = rt
        .block_on(poll_instance_backup(
            &ec2(&[&stuck]),
            &job(&["snap-1"]),
            &PollPolicy::default(),
            at(60),
        ))
        .unwrap_err();
    assert_eq!(err.error_type(), "Throttled", "{err}");
    assert!(
        matches!(&err, Error::Throttled { attempts, .. } if *attempts == ATTEMPTS),
        "{err:?}"
    );
    assert_eq!(stuck.num_calls(), ATTEMPTS as usize);
}

#[test]
fn mocked_retried_start_finds_the_snapshot_set_and_creates_nothing() {
    let volumes = describe_two_volumes();
    let existing = mock!(Client::describe_snapshots)
        .match_requests(|r| {
            r.filters().iter().any(|f| {
                f.name() == Some("tag:backstop:backup-id") && f.values() == [BACKUP.to_string()]
            })
        })
        .then_output(|| {
            snapshots(vec![
                snapshot("snap-root", "vol-root", SnapshotState::Pending, "3%"),
                snapshot("snap-data", "vol-data", SnapshotState::Pending, "1%"),
            ])
        });
    let create = mock!(Client::create_snapshots).then_output(created_set);
    let tags = mock!(Client::create_tags).then_output(|| CreateTagsOutput::builder().build());
    let ec2 = ec2(&[&volumes, &existing, &create, &tags]);
    let req = InstanceBackupRequest::new(BACKUP, "shop", InstanceBackupMode::Snapshots);
    let entry = rt()
        .block_on(start_instance_backup(&ec2, &req, &instance_view()))
        .unwrap();
    assert_eq!(create.num_calls(), 0);
    assert_eq!(entry.snapshot_ids(), ["snap-data", "snap-root"]);
}

fn backed_up(mode: InstanceBackupMode, state: BackupState) -> InstanceBackup {
    let vol = |device: &str, boot: bool, id: &str, snap: &str, size: i32| VolumeBackup {
        device: device.to_string(),
        boot,
        volume_id: id.to_string(),
        size_gib: size,
        volume_type: "gp3".to_string(),
        iops: Some(3000),
        throughput: Some(125),
        encrypted: false,
        kms_key_id: None,
        snapshot_id: Some(snap.to_string()),
    };
    InstanceBackup {
        instance_id: "i-0a1b2c3d4e5f60718".to_string(),
        availability_zone: "eu-west-1b".to_string(),
        mode,
        image_id: None,
        state,
        volumes: vec![
            vol("/dev/xvda", true, "vol-root", "snap-root", 8),
            vol("/dev/sdf", false, "vol-a", "snap-a", 20),
            vol("/dev/sdg", false, "vol-b", "snap-b", 30),
        ],
        error: None,
    }
}

fn running_instance() -> Rule {
    instance_in(InstanceStateName::Running)
}

/// The instance, in `state`, every time it is described.
fn instance_in(state: InstanceStateName) -> Rule {
    mock!(Client::describe_instances).then_output(move || {
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .instances(
                        Instance::builder()
                            .instance_id("i-0a1b2c3d4e5f60718")
                            .state(InstanceState::builder().name(state.clone()).build())
                            .placement(Placement::builder().availability_zone("eu-west-1b").build())
                            .root_device_name("/dev/xvda")
                            .build(),
                    )
                    .build(),
            )
            .build()
    })
}

fn task(state: ReplaceRootVolumeTaskState) -> ReplaceRootVolumeTask {
    ReplaceRootVolumeTask::builder()
        .replace_root_volume_task_id("replacevol-1")
        .instance_id("i-0a1b2c3d4e5f60718")
        .task_state(state)
        .tags(
            Tag::builder()
                .key("backstop:restore-id")
                .value(PIPELINE_RESTORE)
                .build(),
        )
        .build()
}

fn tasks(list: Vec<ReplaceRootVolumeTask>) -> DescribeReplaceRootVolumeTasksOutput {
    DescribeReplaceRootVolumeTasksOutput::builder()
        .set_replace_root_volume_tasks(Some(list))
        .build()
}

#[test]
fn mocked_replace_root_task_runs_pending_in_progress_succeeded_and_is_created_once() {
    let instance = running_instance();
    let describe = mock!(Client::describe_replace_root_volume_tasks)
        .sequence()
        .output(|| tasks(vec![]))
        .output(|| tasks(vec![task(ReplaceRootVolumeTaskState::InProgress)]))
        .output(|| tasks(vec![task(ReplaceRootVolumeTaskState::Succeeded)]))
        .build();
    // The same token on every retry and resumed run, within EC2's 64 characters.
    let token = client_token(&[
        "CreateReplaceRootVolumeTask",
        PIPELINE_RESTORE,
        "i-0a1b2c3d4e5f60718",
    ]);
    let create = mock!(Client::create_replace_root_volume_task)
        .match_requests(move |r| {
            r.client_token() == Some(token.as_str())
                && r.instance_id() == Some("i-0a1b2c3d4e5f60718")
                && r.snapshot_id() == Some("snap-root")
                && r.image_id().is_none()
                && r.delete_replaced_root_volume() == Some(false)
        })
        .then_output(|| {
            CreateReplaceRootVolumeTaskOutput::builder()
                .replace_root_volume_task(task(ReplaceRootVolumeTaskState::Pending))
                .build()
        });
    let snapshots = backup_snapshots();
    let ec2 = ec2(&[&instance, &describe, &create, &snapshots]);
    let entry = backed_up(InstanceBackupMode::Snapshots, BackupState::Completed);
    let r = InstanceRestore {
        backup_id: BACKUP,
        entry: &entry,
        restore_id: PIPELINE_RESTORE,
        mode: InstanceRestoreMode::ReplaceRoot,
    };
    let rt = rt();
    let first = rt.block_on(restore_instance_step(&ec2, &r)).unwrap();
    assert!(!first.done);
    assert_eq!(first.replace_root_task_id.as_deref(), Some("replacevol-1"));
    assert_eq!(first.actions.len(), 1, "{:?}", first.actions);
    assert!(
        first.phase.to_string().contains("pending"),
        "{}",
        first.phase
    );
    let second = rt.block_on(restore_instance_step(&ec2, &r)).unwrap();
    assert!(!second.done);
    assert!(
        second.actions.is_empty(),
        "resuming finds the task: {:?}",
        second.actions
    );
    assert!(
        second.phase.to_string().contains("in-progress"),
        "{}",
        second.phase
    );
    let third = rt.block_on(restore_instance_step(&ec2, &r)).unwrap();
    assert!(third.done);
    assert_eq!(create.num_calls(), 1);
}

#[test]
fn mocked_replace_root_of_a_stopped_instance_starts_it_first_and_refuses_one_shutting_down() {
    let describe = mock!(Client::describe_replace_root_volume_tasks).then_output(|| tasks(vec![]));
    let create = mock!(Client::create_replace_root_volume_task).then_output(|| {
        CreateReplaceRootVolumeTaskOutput::builder()
            .replace_root_volume_task(task(ReplaceRootVolumeTaskState::Pending))
            .build()
    });
    let start = mock!(Client::start_instances)
        .match_requests(|r| r.instance_ids() == ["i-0a1b2c3d4e5f60718"])
        .then_output(|| StartInstancesOutput::builder().build());
    let entry = backed_up(InstanceBackupMode::Snapshots, BackupState::Completed);
    let r = InstanceRestore {
        backup_id: BACKUP,
        entry: &entry,
        restore_id: PIPELINE_RESTORE,
        mode: InstanceRestoreMode::ReplaceRoot,
    };
    let rt = rt();
    // Stopped: EC2 would answer IncorrectState, so the instance is started and the task waits.
    let stopped = instance_in(InstanceStateName::Stopped);
    let ec2_stopped = ec2(&[&stopped, &describe, &create, &start]);
    let step = rt
        .block_on(restore_instance_step(&ec2_stopped, &r))
        .unwrap();
    assert!(!step.done);
    assert_eq!(step.actions, ["StartInstances i-0a1b2c3d4e5f60718"]);
    assert_eq!(create.num_calls(), 0, "no task on a stopped instance");
    // Still on its way: waited for, nothing called.
    let pending = instance_in(InstanceStateName::Pending);
    let ec2_pending = ec2(&[&pending, &describe, &create, &start]);
    let step = rt
        .block_on(restore_instance_step(&ec2_pending, &r))
        .unwrap();
    assert!(!step.done && step.actions.is_empty(), "{:?}", step.actions);
    assert_eq!((create.num_calls(), start.num_calls()), (0, 1));
    // Running: the task is created.
    let running = running_instance();
    let snapshots = backup_snapshots();
    let ec2_running = ec2(&[&running, &describe, &create, &start, &snapshots]);
    let step = rt
        .block_on(restore_instance_step(&ec2_running, &r))
        .unwrap();
    assert_eq!(create.num_calls(), 1, "{:?}", step.actions);
    // Shutting down: a named failure, nothing created.
    let gone = instance_in(InstanceStateName::ShuttingDown);
    let ec2_gone = ec2(&[&gone, &describe, &create, &start]);
    let err = rt
        .block_on(restore_instance_step(&ec2_gone, &r))
        .unwrap_err();
    assert_eq!(err.error_type(), "InstanceRestoreFailed", "{err}");
    assert_eq!(create.num_calls(), 1);
}

#[test]
fn mocked_failed_replace_root_task_is_instance_restore_failed_keeping_the_old_root() {
    let instance = running_instance();
    let describe = mock!(Client::describe_replace_root_volume_tasks)
        .then_output(|| tasks(vec![task(ReplaceRootVolumeTaskState::FailedDetached)]));
    let create = mock!(Client::create_replace_root_volume_task).then_output(|| {
        CreateReplaceRootVolumeTaskOutput::builder()
            .replace_root_volume_task(task(ReplaceRootVolumeTaskState::Pending))
            .build()
    });
    let ec2 = ec2(&[&instance, &describe, &create]);
    let entry = backed_up(InstanceBackupMode::Snapshots, BackupState::Completed);
    let r = InstanceRestore {
        backup_id: BACKUP,
        entry: &entry,
        restore_id: PIPELINE_RESTORE,
        mode: InstanceRestoreMode::ReplaceRoot,
    };
    let err = rt().block_on(restore_instance_step(&ec2, &r)).unwrap_err();
    assert_eq!(err.error_type(), "InstanceRestoreFailed", "{err}");
    assert!(
        err.to_string().contains("replacevol-1 is failed-detached"),
        "{err}"
    );
    assert!(
        err.to_string().contains("original root volume is kept"),
        "{err}"
    );
    assert_eq!(create.num_calls(), 0);
}

#[test]
fn mocked_restore_of_a_pending_backup_or_a_vanished_instance_is_refused_untouched() {
    let gone = mock!(Client::describe_instances)
        .then_error(|| DescribeInstancesError::generic(meta("InvalidInstanceID.NotFound")));
    let stop = mock!(Client::stop_instances).then_output(|| StopInstancesOutput::builder().build());
    let ec2 = ec2(&[&gone, &stop]);
    let rt = rt();
    let pending = backed_up(InstanceBackupMode::Snapshots, BackupState::Pending);
    let err = rt
        .block_on(restore_instance_step(
            &ec2,
            &InstanceRestore {
                backup_id: BACKUP,
                entry: &pending,
                restore_id: PIPELINE_RESTORE,
                mode: InstanceRestoreMode::SwapVolumes,
            },
        ))
        .unwrap_err();
    assert_eq!(err.error_type(), "BackupNotUsable", "{err}");
    assert_eq!(gone.num_calls(), 0, "refused before any call");
    let completed = backed_up(InstanceBackupMode::Snapshots, BackupState::Completed);
    let err = rt
        .block_on(restore_instance_step(
            &ec2,
            &InstanceRestore {
                backup_id: BACKUP,
                entry: &completed,
                restore_id: PIPELINE_RESTORE,
                mode: InstanceRestoreMode::SwapVolumes,
            },
        ))
        .unwrap_err();
    assert_eq!(err.error_type(), "InstanceNotFound", "{err}");
    assert_eq!(stop.num_calls(), 0);
}

/// A small EC2 world the swap restore runs against: one instance, its volumes, and a log of
/// the mutating calls that took effect. `crash_at` makes the mutating call with that index
/// fail (the process "dies" there) without taking effect.
#[derive(Default)]
struct World {
    instance_state: String,
    devices: BTreeMap<String, String>,
    volumes: BTreeMap<String, Vol>,
    created: u32,
    applied: Vec<String>,
    crash_at: Option<usize>,
}

#[derive(Clone, Default)]
struct Vol {
    snapshot: Option<String>,
    state: String,
    size: i32,
    tags: BTreeMap<String, String>,
}

type Shared = Arc<Mutex<World>>;

impl World {
    fn start() -> Shared {
        let mut w = World {
            instance_state: "running".to_string(),
            ..World::default()
        };
        for (device, id, size) in [
            ("/dev/xvda", "vol-root", 8),
            ("/dev/sdf", "vol-a", 20),
            ("/dev/sdg", "vol-b", 30),
        ] {
            w.devices.insert(device.to_string(), id.to_string());
            w.volumes.insert(
                id.to_string(),
                Vol {
                    state: "in-use".to_string(),
                    size,
                    ..Vol::default()
                },
            );
        }
        Arc::new(Mutex::new(w))
    }

    /// Records a mutating call; false when the simulated crash hits it.
    fn apply(&mut self, call: String) -> bool {
        if self.crash_at == Some(self.applied.len()) {
            self.crash_at = None;
            return false;
        }
        self.applied.push(call);
        true
    }

    fn attachment_of(&self, volume: &str) -> Option<String> {
        self.devices
            .iter()
            .find(|(_, v)| v.as_str() == volume)
            .map(|(d, _)| d.clone())
    }

    fn volume(&self, id: &str, v: &Vol) -> Volume {
        let mut b = Volume::builder()
            .volume_id(id)
            .size(v.size)
            .state(VolumeState::from(v.state.as_str()))
            .set_snapshot_id(v.snapshot.clone())
            .set_tags(Some(
                v.tags
                    .iter()
                    .map(|(k, val)| Tag::builder().key(k).value(val).build())
                    .collect(),
            ));
        if let Some(device) = self.attachment_of(id) {
            b = b.attachments(
                VolumeAttachment::builder()
                    .volume_id(id)
                    .instance_id("i-0a1b2c3d4e5f60718")
                    .device(device)
                    .state(VolumeAttachmentState::Attached)
                    .build(),
            );
        }
        b.build()
    }
}

fn crash() -> ErrorMetadata {
    meta("InternalError")
}

fn world_rules(w: &Shared) -> Vec<Rule> {
    let describe_instances = {
        let w = w.clone();
        mock!(Client::describe_instances).then_compute_output(move |_| {
            let mut w = w.lock().unwrap();
            // Transitions finish by the next look.
            w.instance_state = match w.instance_state.as_str() {
                "stopping" => "stopped".to_string(),
                "pending" => "running".to_string(),
                other => other.to_string(),
            };
            let mappings = w
                .devices
                .iter()
                .map(|(d, v)| {
                    InstanceBlockDeviceMapping::builder()
                        .device_name(d)
                        .ebs(EbsInstanceBlockDevice::builder().volume_id(v).build())
                        .build()
                })
                .collect();
            DescribeInstancesOutput::builder()
                .reservations(
                    Reservation::builder()
                        .instances(
                            Instance::builder()
                                .instance_id("i-0a1b2c3d4e5f60718")
                                .state(
                                    InstanceState::builder()
                                        .name(InstanceStateName::from(w.instance_state.as_str()))
                                        .build(),
                                )
                                .placement(
                                    Placement::builder().availability_zone("eu-west-1b").build(),
                                )
                                .root_device_name("/dev/xvda")
                                .set_block_device_mappings(Some(mappings))
                                .build(),
                        )
                        .build(),
                )
                .build()
        })
    };
    let describe_volumes = {
        let w = w.clone();
        mock!(Client::describe_volumes).then_compute_output(move |req| {
            let mut w = w.lock().unwrap();
            for v in w.volumes.values_mut() {
                if v.state == "creating" {
                    v.state = "available".to_string();
                }
            }
            let w = &*w;
            let ids = req.volume_ids();
            let found = w
                .volumes
                .iter()
                .filter(|(id, _)| ids.is_empty() || ids.contains(id))
                .filter(|(_, v)| {
                    req.filters().iter().all(|f| {
                        let key = f.name().and_then(|n| n.strip_prefix("tag:"));
                        key.is_some_and(|k| {
                            v.tags.get(k).is_some_and(|val| f.values().contains(val))
                        })
                    })
                })
                .map(|(id, v)| w.volume(id, v))
                .collect();
            DescribeVolumesOutput::builder()
                .set_volumes(Some(found))
                .build()
        })
    };
    let stop = {
        let w = w.clone();
        mock!(Client::stop_instances).then_compute_response(move |_| {
            let mut w = w.lock().unwrap();
            if !w.apply("StopInstances".to_string()) {
                return MockResponse::Error(StopInstancesError::generic(crash()));
            }
            w.instance_state = "stopping".to_string();
            MockResponse::Output(StopInstancesOutput::builder().build())
        })
    };
    let start = {
        let w = w.clone();
        mock!(Client::start_instances).then_compute_response(move |_| {
            let mut w = w.lock().unwrap();
            if !w.apply("StartInstances".to_string()) {
                return MockResponse::Error(StartInstancesError::generic(crash()));
            }
            w.instance_state = "pending".to_string();
            MockResponse::Output(StartInstancesOutput::builder().build())
        })
    };
    let create_volume = {
        let w = w.clone();
        mock!(Client::create_volume).then_compute_response(move |req| {
            let mut w = w.lock().unwrap();
            let tags: BTreeMap<String, String> = req
                .tag_specifications()
                .iter()
                .flat_map(|s| s.tags())
                .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                .collect();
            let device = tags.get("backstop:device").cloned().unwrap_or_default();
            if !w.apply(format!("CreateVolume {device}")) {
                return MockResponse::Error(CreateVolumeError::generic(crash()));
            }
            w.created += 1;
            let id = format!("vol-new{}", w.created);
            w.volumes.insert(
                id.clone(),
                Vol {
                    snapshot: req.snapshot_id().map(str::to_string),
                    state: "creating".to_string(),
                    size: req.size().unwrap_or_default(),
                    tags,
                },
            );
            MockResponse::Output(
                CreateVolumeOutput::builder()
                    .volume_id(id)
                    .state(VolumeState::Creating)
                    .build(),
            )
        })
    };
    let tag = {
        let w = w.clone();
        mock!(Client::create_tags).then_compute_response(move |req| {
            let mut w = w.lock().unwrap();
            if !w.apply(format!("CreateTags {}", req.resources().join(","))) {
                return MockResponse::Error(CreateTagsError::generic(crash()));
            }
            for r in req.resources() {
                if let Some(v) = w.volumes.get_mut(r) {
                    for t in req.tags() {
                        v.tags.insert(
                            t.key().unwrap_or_default().to_string(),
                            t.value().unwrap_or_default().to_string(),
                        );
                    }
                }
            }
            MockResponse::Output(CreateTagsOutput::builder().build())
        })
    };
    let detach = {
        let w = w.clone();
        mock!(Client::detach_volume).then_compute_response(move |req| {
            let mut w = w.lock().unwrap();
            let volume = req.volume_id().unwrap_or_default().to_string();
            if w.instance_state != "stopped" || w.attachment_of(&volume).is_none() {
                return MockResponse::Error(DetachVolumeError::generic(meta("IncorrectState")));
            }
            if !w.apply(format!("DetachVolume {volume}")) {
                return MockResponse::Error(DetachVolumeError::generic(crash()));
            }
            let device = w.attachment_of(&volume).unwrap_or_default();
            w.devices.remove(&device);
            if let Some(v) = w.volumes.get_mut(&volume) {
                v.state = "available".to_string();
            }
            MockResponse::Output(DetachVolumeOutput::builder().build())
        })
    };
    let attach = {
        let w = w.clone();
        mock!(Client::attach_volume).then_compute_response(move |req| {
            let mut w = w.lock().unwrap();
            let volume = req.volume_id().unwrap_or_default().to_string();
            let device = req.device().unwrap_or_default().to_string();
            let available = w
                .volumes
                .get(&volume)
                .is_some_and(|v| v.state == "available");
            if w.instance_state != "stopped" || w.devices.contains_key(&device) || !available {
                return MockResponse::Error(AttachVolumeError::generic(meta("IncorrectState")));
            }
            if !w.apply(format!("AttachVolume {device}")) {
                return MockResponse::Error(AttachVolumeError::generic(crash()));
            }
            w.devices.insert(device, volume.clone());
            if let Some(v) = w.volumes.get_mut(&volume) {
                v.state = "in-use".to_string();
            }
            MockResponse::Output(AttachVolumeOutput::builder().build())
        })
    };
    vec![
        describe_instances,
        describe_volumes,
        backup_snapshots(),
        stop,
        start,
        create_volume,
        tag,
        detach,
        attach,
    ]
}

/// A completed snapshot carrying backup `backup`'s id tag.
fn snapshot_of(id: &str, backup: &str) -> Snapshot {
    Snapshot::builder()
        .snapshot_id(id)
        .state(SnapshotState::Completed)
        .tags(
            Tag::builder()
                .key(backstop_core::aws::ec2::TAG_BACKUP_ID)
                .value(backup)
                .build(),
        )
        .build()
}

/// `DescribeSnapshots` as EC2 answers it: each snapshot asked for, of the backup `owner`
/// names for it, less those a `tag:` filter of the request leaves out.
fn snapshots_owned_by(owner: fn(&str) -> &'static str) -> Rule {
    mock!(Client::describe_snapshots).then_compute_output(move |req| {
        let wanted = |s: &Snapshot| {
            req.filters().iter().all(|f| {
                let Some(key) = f.name().and_then(|n| n.strip_prefix("tag:")) else {
                    return true;
                };
                s.tags().iter().any(|t| {
                    t.key() == Some(key) && f.values().iter().any(|v| t.value() == Some(v))
                })
            })
        };
        snapshots(
            req.snapshot_ids()
                .iter()
                .map(|id| snapshot_of(id, owner(id)))
                .filter(wanted)
                .collect(),
        )
    })
}

/// `DescribeSnapshots` answering each snapshot asked for as one of backup [`BACKUP`], as
/// Backstop's backups are.
fn backup_snapshots() -> Rule {
    snapshots_owned_by(|_| BACKUP)
}

/// Runs steps until the restore is done (or a step fails); panics if it never converges.
fn drive(
    rt: &tokio::runtime::Runtime,
    ec2: &Ec2,
    r: &InstanceRestore<'_>,
) -> Result<RestoreStep, Error> {
    for _ in 0..30 {
        let step = rt.block_on(restore_instance_step(ec2, r))?;
        if step.done {
            return Ok(step);
        }
    }
    panic!("the restore did not converge in 30 steps");
}

/// Every mutating call a whole swap restore of the three devices makes, once each.
fn full_restore_calls() -> Vec<String> {
    let mut calls: Vec<String> = [
        "StopInstances",
        "CreateVolume /dev/xvda",
        "CreateVolume /dev/sdf",
        "CreateVolume /dev/sdg",
        "CreateTags vol-root",
        "CreateTags vol-a",
        "CreateTags vol-b",
        "DetachVolume vol-root",
        "DetachVolume vol-a",
        "DetachVolume vol-b",
        "AttachVolume /dev/xvda",
        "AttachVolume /dev/sdf",
        "AttachVolume /dev/sdg",
        "StartInstances",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    calls.sort();
    calls
}

#[test]
fn mocked_swap_restore_interrupted_at_every_call_resumes_with_only_the_missing_calls() {
    let rt = rt();
    let entry = backed_up(InstanceBackupMode::Snapshots, BackupState::Completed);
    let r = InstanceRestore {
        backup_id: BACKUP,
        entry: &entry,
        restore_id: "restore-1",
        mode: InstanceRestoreMode::SwapVolumes,
    };
    let expected = full_restore_calls();
    for crash_at in 0..=expected.len() {
        let world = World::start();
        world.lock().unwrap().crash_at = Some(crash_at);
        let rules = world_rules(&world);
        let refs: Vec<&Rule> = rules.iter().collect();
        let ec2 = ec2(&refs);

        let first = drive(&rt, &ec2, &r);
        let before_resume = world.lock().unwrap().applied.len();
        if crash_at < expected.len() {
            let err = first.expect_err("the simulated crash stops the first run");
            assert_eq!(err.error_type(), "Ec2Error", "{err}");
            assert_eq!(before_resume, crash_at);
        } else {
            assert!(first.is_ok(), "no crash: the first run completes");
        }

        let step = drive(&rt, &ec2, &r).unwrap_or_else(|e| panic!("resume after {crash_at}: {e}"));
        let w = world.lock().unwrap();
        let resumed = &w.applied[before_resume..];
        let mut all = w.applied.clone();
        all.sort();
        assert_eq!(
            all, expected,
            "interrupted after {crash_at} calls, resumed with {resumed:?}: every call once"
        );
        // The end state: each device carries a volume from its snapshot, the instance runs,
        // the replaced volumes are kept and tagged.
        assert_eq!(w.instance_state, "running");
        for v in &entry.volumes {
            let now = &w.devices[&v.device];
            assert_ne!(now, &v.volume_id);
            assert_eq!(w.volumes[now].snapshot.as_ref(), v.snapshot_id.as_ref());
            assert_eq!(w.volumes[now].size, v.size_gib);
            let old = &w.volumes[&v.volume_id];
            assert_eq!(old.state, "available");
            assert_eq!(old.tags["backstop:replaced-by"], *now);
            assert_eq!(
                old.tags["backstop:failed-state-of"],
                format!("i-0a1b2c3d4e5f60718:{}", v.device)
            );
            let reported = step.volumes.iter().find(|s| s.device == v.device).unwrap();
            assert_eq!(&reported.volume_id, now);
            assert_eq!(
                reported.replaced_volume_id.as_deref(),
                Some(v.volume_id.as_str())
            );
        }
        assert_eq!(w.created, 3, "one new volume per device, never a second");
        drop(w);
        // Done is done: one more run makes no call.
        let again = drive(&rt, &ec2, &r).unwrap();
        assert!(again.actions.is_empty());
        assert_eq!(world.lock().unwrap().applied.len(), expected.len());
    }
}

#[test]
fn mocked_device_selection_and_boot_exclusion_shape_the_create_snapshots_call() {
    let volumes = describe_two_volumes();
    let existing = mock!(Client::describe_snapshots).then_output(|| snapshots(vec![]));
    // Only /dev/sdf is wanted: the call excludes the boot volume and no data volume.
    let create = mock!(Client::create_snapshots)
        .match_requests(|r| {
            let spec = r.instance_specification();
            spec.and_then(|s| s.instance_id()) == Some("i-0a1b2c3d4e5f60718")
                && spec.and_then(|s| s.exclude_boot_volume()) == Some(true)
                && spec.is_some_and(|s| s.exclude_data_volume_ids().is_empty())
        })
        .then_output(|| {
            CreateSnapshotsOutput::builder()
                .snapshots(
                    SnapshotInfo::builder()
                        .snapshot_id("snap-data")
                        .volume_id("vol-data")
                        .build(),
                )
                .build()
        });
    let tags = mock!(Client::create_tags).then_output(|| CreateTagsOutput::builder().build());
    let ec2 = ec2(&[&volumes, &existing, &create, &tags]);
    let mut req = InstanceBackupRequest::new(BACKUP, "shop", InstanceBackupMode::Snapshots);
    req.exclude_boot = true;
    let entry = rt()
        .block_on(start_instance_backup(&ec2, &req, &instance_view()))
        .unwrap();
    assert_eq!(create.num_calls(), 1);
    assert_eq!(entry.volumes.len(), 1);
    assert_eq!(entry.volumes[0].device, "/dev/sdf");
    assert_eq!(entry.volumes[0].snapshot_id.as_deref(), Some("snap-data"));

    // A device the instance does not have is refused before any call.
    let mut bad = InstanceBackupRequest::new(BACKUP, "shop", InstanceBackupMode::Snapshots);
    bad.devices = vec!["/dev/sdz".to_string()];
    let err = rt()
        .block_on(start_instance_backup(&ec2, &bad, &instance_view()))
        .unwrap_err();
    assert_eq!(err.error_type(), "InvalidInput", "{err}");
    assert!(err.to_string().contains("/dev/sdz"), "{err}");
    assert_eq!(create.num_calls(), 1);
}

#[test]
fn mocked_image_backup_is_made_without_reboot_and_a_retried_call_finds_it_by_name() {
    use aws_sdk_ec2::operation::create_image::{CreateImageError, CreateImageOutput};
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice};
    let image = || {
        Image::builder()
            .image_id("ami-9")
            .state(ImageState::Pending)
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(EbsBlockDevice::builder().snapshot_id("snap-i-root").build())
                    .build(),
            )
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/sdf")
                    .ebs(EbsBlockDevice::builder().snapshot_id("snap-i-data").build())
                    .build(),
            )
            .build()
    };
    let volumes = describe_two_volumes();
    // No image tagged with this backup yet; then the one created, looked up by id or name.
    let by_tag = mock!(Client::describe_images)
        .match_requests(|r| {
            r.filters()
                .iter()
                .any(|f| f.name() == Some("tag:backstop:backup-id"))
        })
        .then_output(|| DescribeImagesOutput::builder().build());
    let by_id_or_name = mock!(Client::describe_images)
        .then_output(move || DescribeImagesOutput::builder().images(image()).build());
    let create = mock!(Client::create_image)
        .match_requests(|r| {
            r.no_reboot() == Some(true)
                && r.instance_id() == Some("i-0a1b2c3d4e5f60718")
                && r.tag_specifications().len() == 2
        })
        .sequence()
        .output(|| CreateImageOutput::builder().image_id("ami-9").build())
        // The retry of a call whose response was lost: the name is already ours.
        .error(|| CreateImageError::generic(meta("InvalidAMIName.Duplicate")))
        .build();
    let ec2 = ec2(&[&volumes, &by_tag, &by_id_or_name, &create]);
    let req = InstanceBackupRequest::new(BACKUP, "shop", InstanceBackupMode::Image);
    let rt = rt();
    let first = rt
        .block_on(start_instance_backup(&ec2, &req, &instance_view()))
        .unwrap();
    assert_eq!(first.image_id.as_deref(), Some("ami-9"));
    assert_eq!(first.snapshot_ids(), ["snap-i-data", "snap-i-root"]);
    let retried = rt
        .block_on(start_instance_backup(&ec2, &req, &instance_view()))
        .unwrap();
    assert_eq!(retried, first);
    assert_eq!(create.num_calls(), 2);

    let mut bad = InstanceBackupRequest::new(BACKUP, "shop", InstanceBackupMode::Image);
    bad.exclude_boot = true;
    let err = rt
        .block_on(start_instance_backup(&ec2, &bad, &instance_view()))
        .unwrap_err();
    assert_eq!(err.error_type(), "InvalidInput", "{err}");
    assert_eq!(create.num_calls(), 2);
}

/// A failed snapshot set is deleted, but only what carries this backup's id tag: a snapshot id
/// in the job that is not tagged with it (planted or reused) is left alone.
#[test]
fn mocked_a_failed_set_deletes_only_the_snapshots_carrying_this_backups_tag() {
    use aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput;
    use backstop_core::aws::ec2::TAG_BACKUP_ID;
    use backstop_core::instance::backup::record_outcome;
    use backstop_core::model::manifest::{Manifest, Purpose, MANIFEST_FORMAT};

    const OURS: &str = "snap-0aaaaaaaaaaaaaaa1";
    const PLANTED: &str = "snap-0bbbbbbbbbbbbbbb2";
    let describe = mock!(Client::describe_snapshots)
        .match_requests(|r| {
            r.filters().iter().any(|f| {
                f.name() == Some(&format!("tag:{TAG_BACKUP_ID}")) && f.values() == [BACKUP]
            })
        })
        .then_output(|| snapshots(vec![snapshot_of(OURS, BACKUP)]));
    let delete_ours = mock!(Client::delete_snapshot)
        .match_requests(|r| r.snapshot_id() == Some(OURS))
        .then_output(|| DeleteSnapshotOutput::builder().build());
    let delete_planted = mock!(Client::delete_snapshot)
        .match_requests(|r| r.snapshot_id() == Some(PLANTED))
        .then_output(|| DeleteSnapshotOutput::builder().build());
    let ec2 = ec2(&[&describe, &delete_ours, &delete_planted]);
    let (catalog, _) = crate::support::memory_catalog("backups");
    let mut pending = backed_up(InstanceBackupMode::Snapshots, BackupState::Pending);
    pending.volumes.clear();
    rt().block_on(catalog.write_manifest(&Manifest {
        format_version: MANIFEST_FORMAT,
        backup_id: BACKUP.to_string(),
        application: "shop".to_string(),
        app_version: None,
        purpose: Purpose::Backup,
        state: BackupState::Pending,
        started_at: STARTED,
        finished_at: STARTED,
        databases: Vec::new(),
        instances: vec![pending],
        error: None,
        deployed: None,
        run: None,
    }))
    .unwrap();
    let manifest = rt()
        .block_on(record_outcome(
            &ec2,
            &catalog,
            &job(&[OURS, PLANTED]),
            &JobStatus::Failed {
                reason: "snapshot failed".to_string(),
            },
            at(60),
        ))
        .unwrap();
    assert_eq!(manifest.instances[0].state, BackupState::Failed);
    assert_eq!(delete_ours.num_calls(), 1);
    assert_eq!(
        delete_planted.num_calls(),
        0,
        "an untagged snapshot is not ours to delete"
    );
}

/// A backup whose manifest names a snapshot that is not its own (no backup id tag: planted,
/// or another backup's) restores nothing: refused before the instance is stopped.
#[test]
fn mocked_a_snapshot_without_the_backups_tag_is_refused_before_the_instance_is_touched() {
    let instance = running_instance();
    let foreign = snapshots_owned_by(|id| {
        if id == "snap-a" {
            "someone-else"
        } else {
            BACKUP
        }
    });
    let volumes =
        mock!(Client::describe_volumes).then_output(|| DescribeVolumesOutput::builder().build());
    let stop = mock!(Client::stop_instances).then_output(|| StopInstancesOutput::builder().build());
    let ec2 = ec2(&[&instance, &foreign, &volumes, &stop]);
    let entry = backed_up(InstanceBackupMode::Snapshots, BackupState::Completed);
    let r = InstanceRestore {
        backup_id: BACKUP,
        entry: &entry,
        restore_id: "restore-1",
        mode: InstanceRestoreMode::SwapVolumes,
    };
    let err = rt().block_on(restore_instance_step(&ec2, &r)).unwrap_err();
    assert_eq!(err.error_type(), "InstanceRestoreFailed", "{err}");
    assert!(err.to_string().contains("snapshot snap-a"), "{err}");
    assert_eq!(stop.num_calls(), 0, "the instance was not touched");
}
