//! The `backstop ec2` commands end to end against a real moto server: a snapshot-set backup
//! of an instance with a root and two data volumes (manifest in the catalog and in S3, the
//! snapshots and their tags in EC2), a retried backup creating nothing twice, a swap-volumes
//! restore (new volumes from the snapshots, the replaced ones kept and tagged) that a rerun
//! with the same restore id leaves alone, bad input failing with a named error and no side
//! effect, and retention (the CLI and the scheduled prune). Results are checked with the bed's
//! own EC2 and S3 clients, not through Backstop.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, Instance, InstanceType, ResourceType, Snapshot,
    Tag, TagSpecification, Volume, VolumeType,
};
use backstop_core::context::RetentionSettings;
use backstop_core::tasks::prune;
use backstop_core::tasks::ScheduledEvent;
use serde_json::Value;

use crate::support::{sample_event, tags_of, Bed, Cli};

const IMAGE: &str = "ami-03cf127a";
const ROOT: &str = "/dev/sda1";
const DATA_GP3: &str = "/dev/sdf";
const DATA_ENCRYPTED: &str = "/dev/sdg";

/// A moto bed with an EC2 client to set things up and look at them directly.
struct Aws {
    bed: Bed,
    cli: Cli,
    ec2: aws_sdk_ec2::Client,
}

/// What an instance looks like from outside: its state and device → volume id.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    state: String,
    devices: BTreeMap<String, String>,
}

/// Everything a failed command must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct World {
    /// How many snapshots there are (moto holds a thousand of its own).
    snapshots: usize,
    /// The snapshots Backstop made.
    backstop_snapshots: Vec<String>,
    volumes: Vec<String>,
    keys: Vec<String>,
    instances: Vec<Seen>,
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

impl Aws {
    fn start() -> Aws {
        let bed = Bed::new().moto().build();
        let cli = bed.cli();
        let ec2 = bed.ec2();
        Aws { bed, cli, ec2 }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.bed.rt.block_on(f)
    }

    /// An instance with an 8 GiB root volume, a 20 GiB gp3 volume at /dev/sdf and an
    /// encrypted 30 GiB gp2 volume at /dev/sdg; every volume is tagged team=shop and the
    /// instance carries `instance_tags`.
    fn launch(&self, instance_tags: &[(&str, &str)]) -> String {
        let ebs = |size: i32, kind: VolumeType, encrypted: bool| {
            EbsBlockDevice::builder()
                .volume_size(size)
                .volume_type(kind)
                .encrypted(encrypted)
                .delete_on_termination(false)
                .build()
        };
        let mapping = |device: &str, ebs: EbsBlockDevice| {
            BlockDeviceMapping::builder()
                .device_name(device)
                .ebs(ebs)
                .build()
        };
        let mut req = self
            .ec2
            .run_instances()
            .image_id(IMAGE)
            .instance_type(InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .block_device_mappings(mapping(ROOT, ebs(8, VolumeType::Gp2, false)))
            .block_device_mappings(mapping(DATA_GP3, ebs(20, VolumeType::Gp3, false)))
            .block_device_mappings(mapping(DATA_ENCRYPTED, ebs(30, VolumeType::Gp2, true)))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Volume)
                    .tags(tag("team", "shop"))
                    .build(),
            );
        if !instance_tags.is_empty() {
            req = req.tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(instance_tags.iter().map(|(k, v)| tag(k, v)).collect()))
                    .build(),
            );
        }
        let out = self.block_on(req.send()).expect("RunInstances");
        out.instances()[0].instance_id().unwrap().to_string()
    }

    fn instance(&self, id: &str) -> Instance {
        let out = self
            .block_on(self.ec2.describe_instances().instance_ids(id).send())
            .expect("DescribeInstances");
        out.reservations()[0].instances()[0].clone()
    }

    fn seen(&self, id: &str) -> Seen {
        let i = self.instance(id);
        Seen {
            state: i
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
                .unwrap_or_default(),
            devices: i
                .block_device_mappings()
                .iter()
                .filter_map(|m| {
                    Some((
                        m.device_name()?.to_string(),
                        m.ebs()?.volume_id()?.to_string(),
                    ))
                })
                .collect(),
        }
    }

    fn volume(&self, id: &str) -> Volume {
        let out = self
            .block_on(self.ec2.describe_volumes().volume_ids(id).send())
            .expect("DescribeVolumes");
        out.volumes()[0].clone()
    }

    /// Every volume, sorted by id.
    fn volume_ids(&self) -> Vec<String> {
        let out = self
            .block_on(self.ec2.describe_volumes().send())
            .expect("DescribeVolumes");
        let mut ids: Vec<String> = out
            .volumes()
            .iter()
            .filter_map(|v| v.volume_id().map(str::to_string))
            .collect();
        ids.sort();
        ids
    }

    /// Snapshots this account owns matching `filters` (none: all of them), sorted by id.
    fn snapshots_matching(&self, filters: Vec<Filter>) -> Vec<Snapshot> {
        let out = self
            .block_on(
                self.ec2
                    .describe_snapshots()
                    .owner_ids("self")
                    .set_filters((!filters.is_empty()).then_some(filters))
                    .send(),
            )
            .expect("DescribeSnapshots");
        let mut snaps = out.snapshots().to_vec();
        snaps.sort_by(|a, b| a.snapshot_id().cmp(&b.snapshot_id()));
        snaps
    }

    /// Snapshots with these tags (none: all of them), sorted by id.
    fn snapshots(&self, tags: &[(&str, &str)]) -> Vec<Snapshot> {
        self.snapshots_matching(
            tags.iter()
                .map(|(k, v)| {
                    Filter::builder()
                        .name(format!("tag:{k}"))
                        .values(*v)
                        .build()
                })
                .collect(),
        )
    }

    fn ids(snapshots: Vec<Snapshot>) -> Vec<String> {
        snapshots
            .iter()
            .filter_map(|s| s.snapshot_id().map(str::to_string))
            .collect()
    }

    fn snapshot_ids(&self, tags: &[(&str, &str)]) -> Vec<String> {
        Self::ids(self.snapshots(tags))
    }

    /// Snapshots carrying a tag with this key, sorted by id.
    fn snapshot_ids_with_key(&self, key: &str) -> Vec<String> {
        Self::ids(
            self.snapshots_matching(vec![Filter::builder().name("tag-key").values(key).build()]),
        )
    }

    /// `backstop ec2 backup` of one instance with a fixed backup id; its JSON manifest.
    fn backup(&self, instance_id: &str, backup_id: &str) -> Value {
        self.cli.catalog_json(&[
            "ec2",
            "backup",
            "--instance-id",
            instance_id,
            "--app-version",
            "abc123",
            "--backup-id",
            backup_id,
        ])
    }

    fn world(&self, instance_ids: &[&str]) -> World {
        World {
            snapshots: self.snapshot_ids(&[]).len(),
            backstop_snapshots: self.snapshot_ids_with_key("backstop:backup-id"),
            volumes: self.volume_ids(),
            keys: self.bed.keys(),
            instances: instance_ids.iter().map(|i| self.seen(i)).collect(),
        }
    }
}

/// The manifest's volume entry for a device.
fn volume_entry<'a>(instance: &'a Value, device: &str) -> &'a Value {
    instance["volumes"]
        .as_array()
        .expect("volumes is a list")
        .iter()
        .find(|v| v["device"] == device)
        .unwrap_or_else(|| panic!("no volume at {device} in {instance}"))
}

#[test]
fn snapshot_backup_records_every_volume_and_tags_each_snapshot() {
    let aws = Aws::start();
    let id = aws.launch(&[]);
    let before = aws.seen(&id);
    assert_eq!(
        before.devices.keys().collect::<Vec<_>>(),
        [ROOT, DATA_GP3, DATA_ENCRYPTED],
        "the test instance has the three volumes it was launched with"
    );
    let az = aws
        .instance(&id)
        .placement()
        .and_then(|p| p.availability_zone())
        .unwrap()
        .to_string();

    let out = aws.cli.catalog_json(&[
        "ec2",
        "backup",
        "--instance-id",
        &id,
        "--app-version",
        "abc123",
    ]);
    let backup_id = out["backup_id"].as_str().expect("backup_id").to_string();
    let application = out["application"].as_str().unwrap().to_string();
    assert_eq!(
        application, id,
        "the application defaults to the instance id"
    );

    let shown = aws.cli.backups_show(&backup_id);
    let raw = aws.bed.manifest(&application, &backup_id);
    assert_eq!(shown, raw, "backups show prints the stored manifest");
    assert_eq!(out, raw, "the backup prints the manifest it stored");

    let tagged = aws.snapshots(&[("backstop:backup-id", &backup_id)]);
    assert_eq!(tagged.len(), 3, "one snapshot per volume: {tagged:?}");
    let snapshot_of = |volume_id: &str| -> &Snapshot {
        tagged
            .iter()
            .find(|s| s.volume_id() == Some(volume_id))
            .unwrap_or_else(|| panic!("no snapshot of {volume_id}"))
    };

    for m in [&shown, &raw] {
        assert_eq!(m["state"], "completed");
        assert_eq!(m["backup_id"], backup_id.as_str());
        assert_eq!(m["app_version"], "abc123");
        let instances = m["instances"].as_array().unwrap();
        assert_eq!(instances.len(), 1);
        let inst = &instances[0];
        assert_eq!(inst["instance_id"], id.as_str());
        assert_eq!(inst["availability_zone"], az.as_str());
        assert_eq!(inst["mode"], "snapshots");
        assert_eq!(inst["state"], "completed");
        assert_eq!(inst["volumes"].as_array().unwrap().len(), 3);
        for (device, boot, size, kind, encrypted) in [
            (ROOT, true, 8, "gp2", false),
            (DATA_GP3, false, 20, "gp3", false),
            (DATA_ENCRYPTED, false, 30, "gp2", true),
        ] {
            let v = volume_entry(inst, device);
            assert_eq!(v["volume_id"], before.devices[device].as_str(), "{device}");
            assert_eq!(v["boot"], boot, "{device}");
            assert_eq!(v["size_gib"], size, "{device}");
            assert_eq!(v["volume_type"], kind, "{device}");
            assert_eq!(v["encrypted"], encrypted, "{device}");
            if encrypted {
                let key = v["kms_key_id"].as_str().unwrap_or_default();
                assert!(
                    !key.is_empty(),
                    "the encrypted volume's KMS key is kept: {v}"
                );
                assert_eq!(
                    Some(key),
                    aws.volume(&before.devices[device]).kms_key_id(),
                    "the KMS key is the volume's"
                );
            } else {
                assert!(v["kms_key_id"].is_null(), "{device}: {v}");
            }
            let snap = snapshot_of(&before.devices[device]);
            assert_eq!(v["snapshot_id"], snap.snapshot_id().unwrap(), "{device}");
        }
    }

    for device in [ROOT, DATA_GP3, DATA_ENCRYPTED] {
        let snap = snapshot_of(&before.devices[device]);
        let tags = tags_of(snap.tags());
        let want = [
            ("backstop:backup-id", backup_id.as_str()),
            ("backstop:application", application.as_str()),
            ("backstop:commit", "abc123"),
            ("backstop:instance-id", id.as_str()),
            ("backstop:device", device),
            ("team", "shop"),
        ];
        for (k, v) in want {
            assert_eq!(
                tags.get(k).map(String::as_str),
                Some(v),
                "{device} {k}: {tags:?}"
            );
        }
        assert_eq!(snap.state().map(|s| s.as_str()), Some("completed"));
    }
    assert_eq!(
        aws.seen(&id),
        before,
        "a snapshot backup leaves the instance alone"
    );

    let status = aws
        .cli
        .catalog_json(&["ec2", "status", "--backup-id", &backup_id]);
    assert_eq!(status["backup_id"], backup_id.as_str());
    let statuses = status["instances"].as_array().unwrap();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0]["instance_id"], id.as_str());
    assert_eq!(statuses[0]["status"], "COMPLETED");
}

#[test]
fn retried_backup_with_the_same_id_creates_no_new_snapshots() {
    let aws = Aws::start();
    let id = aws.launch(&[]);
    let backup_id = "retried-backup-1";

    let first = aws.backup(&id, backup_id);
    let snapshots = aws.snapshot_ids(&[("backstop:backup-id", backup_id)]);
    assert_eq!(snapshots.len(), 3);
    let count_after_first = aws.snapshot_ids(&[]).len();

    let second = aws.backup(&id, backup_id);
    assert_eq!(
        aws.snapshot_ids(&[("backstop:backup-id", backup_id)]),
        snapshots,
        "the retry found the first call's snapshots"
    );
    assert_eq!(
        aws.snapshot_ids(&[]).len(),
        count_after_first,
        "no snapshot at all was created"
    );
    let ids = |m: &Value| -> Vec<String> {
        let mut ids: Vec<String> = m["instances"][0]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["snapshot_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&first), snapshots);
    assert_eq!(ids(&second), snapshots);
    assert_eq!(second["state"], "completed");
    let raw = aws.bed.manifest(&id, backup_id);
    assert_eq!(ids(&raw), snapshots);
    assert_eq!(raw["instances"].as_array().unwrap().len(), 1);
}

#[test]
fn swap_restore_attaches_new_volumes_from_the_snapshots_and_keeps_the_replaced_ones() {
    let aws = Aws::start();
    let id = aws.launch(&[]);
    let backup_id = "swap-restore-1";
    let manifest = aws.backup(&id, backup_id);
    let inst = &manifest["instances"][0];
    let before = aws.seen(&id);
    assert_eq!(before.state, "running");

    let steps = aws
        .cli
        .catalog_json(&["ec2", "restore", "--backup-id", backup_id]);
    let steps = steps.as_array().expect("one step per instance");
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0]["instance_id"], id.as_str());
    assert_eq!(steps[0]["done"], true);
    let restore_id = steps[0]["restore_id"]
        .as_str()
        .expect("restore_id")
        .to_string();

    let after = aws.seen(&id);
    assert_eq!(after.state, "running", "the instance is started again");
    assert_eq!(
        after.devices.keys().collect::<Vec<_>>(),
        before.devices.keys().collect::<Vec<_>>()
    );
    for (device, original) in &before.devices {
        let new = &after.devices[device];
        assert_ne!(new, original, "{device} carries a new volume");
        let entry = volume_entry(inst, device);
        let v = aws.volume(new);
        assert_eq!(
            v.snapshot_id(),
            entry["snapshot_id"].as_str(),
            "{device} is created from its snapshot"
        );
        let o = aws.volume(original);
        assert_eq!(v.size(), o.size(), "{device} size");
        assert_eq!(v.volume_type(), o.volume_type(), "{device} type");
        assert_eq!(v.encrypted(), o.encrypted(), "{device} encryption");
        if o.encrypted() == Some(true) {
            assert_eq!(v.kms_key_id(), o.kms_key_id(), "{device} KMS key");
        }
        assert_eq!(v.availability_zone(), o.availability_zone(), "{device} AZ");
        let new_tags = tags_of(v.tags());
        assert_eq!(new_tags.get("backstop:restore-id"), Some(&restore_id));
        assert_eq!(new_tags.get("team").map(String::as_str), Some("shop"));

        assert_eq!(
            o.state().map(|s| s.as_str()),
            Some("available"),
            "{device} old volume kept, detached"
        );
        assert!(
            o.attachments().is_empty(),
            "{device}: {:?}",
            o.attachments()
        );
        let old_tags = tags_of(o.tags());
        assert_eq!(old_tags.get("backstop:replaced-by"), Some(new), "{device}");
        assert_eq!(
            old_tags.get("backstop:failed-state-of"),
            Some(&format!("{id}:{device}")),
            "{device}"
        );
        let reported = steps[0]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["device"] == device.as_str())
            .unwrap_or_else(|| panic!("{device} not reported"));
        assert_eq!(reported["volume_id"], new.as_str());
        assert_eq!(reported["replaced_volume_id"], original.as_str());
    }

    let volumes = aws.volume_ids();
    let again = aws.cli.catalog_json(&[
        "ec2",
        "restore",
        "--backup-id",
        backup_id,
        "--restore-id",
        &restore_id,
    ]);
    assert_eq!(again[0]["done"], true);
    assert_eq!(
        again[0]["actions"],
        serde_json::json!([]),
        "the rerun made no call"
    );
    assert_eq!(aws.volume_ids(), volumes, "the rerun created no volume");
    assert_eq!(aws.seen(&id), after, "the rerun detached nothing");
}

#[test]
fn unknown_instance_is_instance_not_found_and_touches_nothing() {
    let aws = Aws::start();
    let id = aws.launch(&[]);
    let world = aws.world(&[&id]);
    let error = aws
        .cli
        .catalog_error(&["ec2", "backup", "--instance-id", "i-0123456789abcdef0"]);
    assert_eq!(error, "InstanceNotFound");
    assert_eq!(aws.world(&[&id]), world);
}

#[test]
fn tag_filter_matching_nothing_is_no_instances_matched_and_touches_nothing() {
    let aws = Aws::start();
    let id = aws.launch(&[("app", "shop")]);
    let world = aws.world(&[&id]);
    let error = aws.cli.catalog_error(&[
        "ec2",
        "backup",
        "--tag",
        "app=nothing",
        "--application",
        "x",
    ]);
    assert_eq!(error, "NoInstancesMatched");
    // A tag that is not KEY=VALUE is refused by the argument parser, as InvalidInput.
    let error = aws
        .cli
        .catalog_error(&["ec2", "backup", "--tag", "=shop", "--application", "x"]);
    assert_eq!(error, "InvalidInput");
    assert_eq!(aws.world(&[&id]), world);
}

#[test]
fn instance_without_ebs_volumes_is_no_ebs_volumes_and_touches_nothing() {
    let aws = Aws::start();
    let id = aws.launch(&[]);
    let devices = aws.seen(&id).devices;
    aws.block_on(aws.ec2.stop_instances().instance_ids(&id).send())
        .expect("StopInstances");
    for (device, volume) in &devices {
        aws.block_on(
            aws.ec2
                .detach_volume()
                .instance_id(&id)
                .volume_id(volume)
                .device(device)
                .send(),
        )
        .expect("DetachVolume");
    }
    let world = aws.world(&[&id]);
    assert!(world.instances[0].devices.is_empty(), "{world:?}");
    assert_eq!(world.instances[0].state, "stopped");

    let error = aws
        .cli
        .catalog_error(&["ec2", "backup", "--instance-id", &id]);
    assert_eq!(error, "NoEbsVolumes");
    assert_eq!(aws.world(&[&id]), world);
}

#[test]
fn restoring_an_instance_the_backup_does_not_hold_is_instance_not_in_backup() {
    let aws = Aws::start();
    let a = aws.launch(&[]);
    let b = aws.launch(&[]);
    let backup_id = "backup-of-a";
    aws.backup(&a, backup_id);
    let world = aws.world(&[&a, &b]);
    assert_eq!(
        world.backstop_snapshots.len(),
        3,
        "the backup of A is in place"
    );
    let error = aws.cli.catalog_error(&[
        "ec2",
        "restore",
        "--backup-id",
        backup_id,
        "--instance-id",
        &b,
    ]);
    assert_eq!(error, "InstanceNotInBackup");
    assert_eq!(aws.world(&[&a, &b]), world);
}

/// Retention: with `--keep-last 2 --max-age-days 0`, of four good backups the two newest stay,
/// the oldest goes (manifest, objects and snapshots) and the second oldest stays because a
/// running execution of the state machine is named after it. A replaced volume (kept failed
/// state) goes; an ordinary volume stays. A dry run plans the same and changes nothing, and a
/// second prune finds nothing more to do. The scheduled prune plans with its own settings.
#[test]
fn prune_keeps_the_newest_good_backups_and_what_a_running_execution_uses() {
    let aws = Aws::start();
    let id = aws.launch(&[]);
    let ids: Vec<String> = (1..=4)
        .map(|k| format!("20261101T00000{k}Z-0000000{k}"))
        .collect();
    for b in &ids {
        aws.backup(&id, b);
    }
    // A running execution named after the second oldest backup (moto leaves executions
    // RUNNING unless told to execute them).
    let machine = aws.bed.create_state_machine(
        "protect",
        r#"{"StartAt":"Done","States":{"Done":{"Type":"Succeed"}}}"#,
    );
    aws.block_on(
        aws.bed
            .sfn()
            .start_execution()
            .state_machine_arn(&machine)
            .name(&ids[1])
            .send(),
    )
    .unwrap();
    // A replaced volume (the failed state a restore kept) and an ordinary one.
    let make_volume = |tags: Vec<Tag>| {
        let mut req = aws
            .ec2
            .create_volume()
            .availability_zone("us-east-1a")
            .size(1);
        if !tags.is_empty() {
            req = req.tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Volume)
                    .set_tags(Some(tags))
                    .build(),
            );
        }
        aws.block_on(req.send())
            .unwrap()
            .volume_id()
            .unwrap()
            .to_string()
    };
    let replaced = make_volume(vec![tag(
        "backstop:failed-state-of",
        &format!("{id}:/dev/sdf"),
    )]);
    let ordinary = make_volume(vec![]);
    let snapshots_of = |b: &str| aws.snapshot_ids(&[("backstop:backup-id", b)]).len();
    assert_eq!(snapshots_of(&ids[0]), 3);
    let prune = |extra: &[&str]| {
        let mut args = vec![
            "prune",
            "--keep-last",
            "2",
            "--max-age-days",
            "0",
            "--state-machine-arn",
            &machine,
        ];
        args.extend_from_slice(extra);
        aws.cli.catalog_json(&args)
    };
    let keys_before = aws.bed.keys();
    let volumes_before = aws.volume_ids();
    let dry = prune(&["--dry-run"]);
    let actions = |out: &Value| -> Vec<(String, String)> {
        out["plan"]["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["backup_id"].as_str().unwrap().to_string(),
                    d["action"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let expected: Vec<(String, String)> = [(3, "keep"), (2, "keep"), (1, "keep"), (0, "prune")]
        .iter()
        .map(|(i, a)| (ids[*i].clone(), a.to_string()))
        .collect();
    assert_eq!(actions(&dry), expected, "{dry}");
    assert!(
        dry["plan"]["backups"][2]["reason"]
            .as_str()
            .unwrap()
            .contains("running execution"),
        "{dry}"
    );
    assert_eq!(
        dry["plan"]["volumes"],
        serde_json::json!([replaced]),
        "{dry}"
    );
    assert_eq!(aws.bed.keys(), keys_before, "a dry run deletes nothing");
    assert_eq!(aws.volume_ids(), volumes_before);
    assert_eq!(snapshots_of(&ids[0]), 3);

    let done = prune(&[]);
    assert_eq!(actions(&done), expected, "{done}");
    assert_eq!(done["plan"]["volumes"], dry["plan"]["volumes"]);
    let keys = aws.bed.keys();
    assert!(
        !keys.iter().any(|k| k.contains(&ids[0])),
        "the oldest backup's objects are gone: {keys:?}"
    );
    for b in &ids[1..] {
        assert!(
            keys.iter()
                .any(|k| k.ends_with(&format!("{b}/manifest.json"))),
            "{b} kept: {keys:?}"
        );
        assert_eq!(snapshots_of(b), 3, "{b}'s snapshots kept");
    }
    assert_eq!(
        snapshots_of(&ids[0]),
        0,
        "the oldest backup's snapshots are gone"
    );
    let volumes = aws.volume_ids();
    assert!(!volumes.contains(&replaced), "{volumes:?}");
    assert!(volumes.contains(&ordinary), "{volumes:?}");
    let again = prune(&[]);
    assert!(
        !again["plan"]["backups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["action"] == "prune"),
        "{again}"
    );
    // The prune Lambda (the retention schedule's target) plans the same through the core,
    // with the policy of its own settings (here a dry run keeping one), on a Scheduled Event.
    let mut config = aws.bed.config();
    config.state_machine_arn = Some(machine.clone());
    config.retention = RetentionSettings {
        keep_last: 1,
        max_age_days: 0,
        dry_run: true,
    };
    let ctx = aws.bed.context(config);
    let event: ScheduledEvent = serde_json::from_value(sample_event("prune")).unwrap();
    let keys = aws.bed.keys();
    let plan = aws.block_on(prune::handle(&ctx, event)).unwrap();
    let lambda = serde_json::json!({ "plan": plan });
    assert_eq!(
        actions(&lambda),
        [(3, "keep"), (2, "prune"), (1, "keep")]
            .iter()
            .map(|(i, a)| (ids[*i].clone(), a.to_string()))
            .collect::<Vec<_>>(),
        "{lambda}"
    );
    assert_eq!(
        aws.bed.keys(),
        keys,
        "the scheduled dry run deletes nothing"
    );
    assert_eq!(snapshots_of(&ids[2]), 3);
}
