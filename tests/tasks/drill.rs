//! The scheduled drill's decisions, with no server: an application without a completed backup
//! fails its drill saying so (and writes no report, having no backup to write it beside); a
//! good backup that cannot be restored (no run document naming its server, or nothing in it)
//! fails with the reason, its report beside the backup. Each outcome is published.

use backstop_core::model::manifest::BackupState;
use backstop_core::tasks::drill::{self, DrillTask};
use backstop_core::tasks::ScheduledEvent;
use backstop_core::Config;
use serde_json::Value;

use crate::support::{memory_context, sample_event, FakeAws};
use crate::{block_on, database_part, day, manifest};

#[test]
fn mocked_the_drill_of_an_application_with_no_good_backup_fails_saying_so() {
    let aws = FakeAws::new().accepting_events();
    let (ctx, store) = memory_context(aws.shared(), Config::new("backups", "backstop"));
    let catalog = ctx.catalog();
    // shop: only a failed and a pending backup. billing: a good backup of a database, with no
    // run document to find its server. empty: a good backup holding nothing.
    let mut failed = manifest(
        "shop",
        "20261101T000000Z-00000001",
        day(1),
        BackupState::Failed,
    );
    failed.error = Some("DumpFailed: x".to_string());
    let pending = manifest(
        "shop",
        "20261102T000000Z-00000002",
        day(2),
        BackupState::Pending,
    );
    let mut billing = manifest(
        "billing",
        "20261103T000000Z-00000003",
        day(3),
        BackupState::Completed,
    );
    billing.databases.push(database_part(
        "billing",
        "backstop/billing/20261103T000000Z-00000003/db/billing.dump",
        10,
    ));
    let empty = manifest(
        "empty",
        "20261104T000000Z-00000004",
        day(4),
        BackupState::Completed,
    );
    for m in [&failed, &pending, &billing, &empty] {
        block_on(catalog.write_manifest(m)).unwrap();
    }
    let keys_before = store.keys();

    // The drill schedule fires.
    let event: ScheduledEvent = serde_json::from_value(sample_event("drill")).unwrap();
    let reports = block_on(drill::handle(&ctx, event)).unwrap();
    let apps: Vec<&str> = reports.iter().map(|r| r.application.as_str()).collect();
    assert_eq!(apps, ["billing", "empty", "shop"]);
    assert!(reports.iter().all(|r| !r.passed), "{reports:?}");

    let shop = &reports[2];
    assert_eq!(shop.backup_id, "");
    assert_eq!(
        shop.error.as_deref(),
        Some("shop has no completed backup to drill")
    );
    assert_eq!(shop.report_key, "", "no backup to write a report beside");

    let billing_report = &reports[0];
    assert_eq!(billing_report.backup_id, billing.backup_id);
    let db_error = billing_report.databases[0].error.as_deref().unwrap();
    assert!(
        db_error.starts_with("InvalidInput:") && db_error.contains("records no run document"),
        "{db_error}"
    );
    let empty_report = &reports[1];
    assert_eq!(
        empty_report.error.as_deref(),
        Some("the backup holds nothing to restore")
    );
    // The two reports of backups are kept beside them; nothing else was written.
    let mut written: Vec<String> = store
        .keys()
        .into_iter()
        .filter(|k| !keys_before.contains(k))
        .collect();
    written.sort();
    let mut want = vec![
        billing_report.report_key.clone(),
        empty_report.report_key.clone(),
    ];
    want.sort();
    assert_eq!(written, want);
    assert!(billing_report
        .report_key
        .starts_with(&format!("backstop/billing/{}/drill-", billing.backup_id)));
    let stored: Value = serde_json::from_slice(
        &block_on(backstop_core::store::ObjectStore::get_bytes(
            store.as_ref(),
            &billing_report.report_key,
        ))
        .unwrap()
        .unwrap(),
    )
    .unwrap();
    assert_eq!(stored, serde_json::to_value(billing_report).unwrap());

    // Each application's outcome is published; the one without a backup names none.
    let published = aws.published();
    let kinds: Vec<&str> = published.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["DrillFailed", "DrillFailed", "DrillFailed"]);
    let (_, shop_detail) = &published[2];
    assert_eq!(shop_detail["application"], "shop");
    assert!(shop_detail.get("backup_id").is_none(), "{shop_detail}");
    assert!(shop_detail.get("report").is_none(), "{shop_detail}");
    assert_eq!(
        published[0].1["report"],
        format!("s3://backups/{}", billing_report.report_key)
    );
    assert_eq!(
        aws.calls(),
        ["events:PutEvents"; 3],
        "nothing but the events"
    );

    // One application on its own (as `backstop drill --application shop`).
    let only = block_on(drill::run(
        &ctx,
        &DrillTask {
            application: Some("shop".to_string()),
            volume_wait_seconds: 1,
        },
    ))
    .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].application, "shop");
    assert!(!only[0].passed);
}

#[test]
fn mocked_a_drill_too_close_to_its_deadline_creates_no_volume_and_says_why() {
    use backstop_core::model::manifest::{InstanceBackup, InstanceBackupMode, VolumeBackup};
    use std::time::{Duration, Instant};

    let aws = FakeAws::new().accepting_events();
    let (ctx, _) = memory_context(aws.shared(), Config::new("backups", "backstop"));
    let mut good = manifest(
        "shop",
        "20261101T000000Z-00000001",
        day(1),
        BackupState::Completed,
    );
    good.instances.push(InstanceBackup {
        instance_id: "i-0a1b2c3d4e5f60718".to_string(),
        availability_zone: "us-east-1a".to_string(),
        mode: InstanceBackupMode::Snapshots,
        image_id: None,
        state: BackupState::Completed,
        volumes: vec![VolumeBackup {
            device: "/dev/xvda".to_string(),
            boot: true,
            volume_id: "vol-0123456789abcdef0".to_string(),
            size_gib: 8,
            volume_type: "gp3".to_string(),
            iops: None,
            throughput: None,
            encrypted: false,
            kms_key_id: None,
            snapshot_id: Some("snap-0123456789abcdef0".to_string()),
        }],
        error: None,
    });
    block_on(ctx.catalog().write_manifest(&good)).unwrap();
    let task = DrillTask {
        application: Some("shop".to_string()),
        volume_wait_seconds: 600,
    };
    // A minute left: not enough to create, wait for and delete a volume.
    let deadline = Instant::now() + Duration::from_secs(60);
    let reports = block_on(backstop_core::deadline::within(
        deadline,
        drill::run(&ctx, &task),
    ))
    .unwrap();
    let volume = &reports[0].volumes[0];
    assert_eq!(volume.volume_id, None);
    assert!(
        volume.error.as_deref().unwrap_or("").contains("deadline"),
        "{volume:?}"
    );
    assert!(!reports[0].passed);
    assert!(
        !aws.calls().iter().any(|c| c == "ec2:CreateVolume"),
        "{:?}",
        aws.calls()
    );
}
