//! The scheduled prune on an in-memory catalog: its policy comes from the function's settings
//! (`ctx.config.retention`), the newest good backups of each application, the ones a running
//! execution uses and the young ones are kept, everything else Backstop made is pruned (objects
//! first, the manifest last), and a dry run plans the same and changes nothing. AWS is the
//! recording fake: it answers the running executions and the EC2 look-ups, so the calls a
//! prune makes are exact.

use backstop_core::context::RetentionSettings;
use backstop_core::model::manifest::{BackupState, Manifest, Purpose};
use backstop_core::retention::{Action, Plan};
use backstop_core::tasks::prune::{self, PruneTask};
use backstop_core::tasks::ScheduledEvent;
use backstop_core::{Config, Context};
use time::OffsetDateTime;

use crate::support::offline::{ec2_empty, guarded};
use crate::support::{memory_context, sample_event, FakeAws};
use crate::{block_on, database_part, manifest};

fn ago(days: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() - time::Duration::days(days)
}

/// EC2 and Step Functions answering a prune: no replaced volumes, no images or snapshots of a
/// pruned backup, and one running execution (the guard restore of `running`).
fn aws(running: &str) -> FakeAws {
    let state_machine = guarded(Config::new("b", "p")).state_machine_arn.unwrap();
    let name = format!("guard-{running}");
    FakeAws::new()
        .answer("ec2:DescribeVolumes", ec2_empty("DescribeVolumes", "volumeSet"))
        .answer("ec2:DescribeImages", ec2_empty("DescribeImages", "imagesSet"))
        .answer("ec2:DescribeSnapshots", ec2_empty("DescribeSnapshots", "snapshotSet"))
        .answer(
            "states:ListExecutions",
            serde_json::json!({"executions": [{
                "executionArn": format!("{}:{name}", state_machine.replace(":stateMachine:", ":execution:")),
                "stateMachineArn": state_machine,
                "name": name,
                "status": "RUNNING",
                "startDate": 1_700_000_000
            }]})
            .to_string(),
        )
}

/// The backups of the scenario, each with a dump beside its manifest, written into the
/// context's catalog: (backup, what the policy does with it).
fn backups(ctx: &Context) -> Vec<(Manifest, Action)> {
    let backup = |app: &str, n: u32, days: i64, state: BackupState| {
        let id = format!("20260101T0000{n:02}Z-000000{n:02}");
        let mut m = manifest(app, &id, ago(days), state);
        let key = format!("{}/db/{app}.dump", ctx.catalog().backup_dir(app, &id));
        m.databases.push(database_part(app, &key, 3));
        m
    };
    let mut forensic = backup("shop", 8, 50, BackupState::Completed);
    forensic.purpose = Purpose::Forensic {
        restore_of: "x".to_string(),
    };
    let all = vec![
        (
            backup("shop", 1, 100, BackupState::Completed),
            Action::Prune,
        ),
        // A running execution (guard's restore of it) uses it.
        (backup("shop", 2, 90, BackupState::Completed), Action::Keep),
        (backup("shop", 3, 80, BackupState::Completed), Action::Keep),
        (backup("shop", 4, 70, BackupState::Completed), Action::Keep),
        (backup("shop", 5, 60, BackupState::Failed), Action::Prune),
        (backup("shop", 6, 1, BackupState::Failed), Action::Keep),
        (
            backup("billing", 7, 200, BackupState::Completed),
            Action::Keep,
        ),
        (forensic, Action::Prune),
    ];
    for (m, _) in &all {
        block_on(ctx.catalog().write_manifest(m)).unwrap();
        block_on(ctx.catalog().store.put_bytes(
            &m.databases[0].artifact.key,
            b"PGDMP".to_vec(),
            "application/octet-stream",
        ))
        .unwrap();
    }
    all
}

fn context(aws: &FakeAws, dry_run: bool) -> Context {
    let mut config = guarded(Config::new("backups", "backstop"));
    config.retention = RetentionSettings {
        keep_last: 2,
        max_age_days: 30,
        dry_run,
    };
    memory_context(aws.shared(), config).0
}

fn decisions(plan: &Plan) -> Vec<(String, Action)> {
    let mut d: Vec<(String, Action)> = plan
        .backups
        .iter()
        .map(|d| (d.backup_id.clone(), d.action))
        .collect();
    d.sort_by(|a, b| a.0.cmp(&b.0));
    d
}

fn expected(all: &[(Manifest, Action)]) -> Vec<(String, Action)> {
    let mut d: Vec<(String, Action)> = all.iter().map(|(m, a)| (m.backup_id.clone(), *a)).collect();
    d.sort_by(|a, b| a.0.cmp(&b.0));
    d
}

fn scheduled() -> ScheduledEvent {
    serde_json::from_value(sample_event("prune")).unwrap()
}

#[test]
fn mocked_the_scheduled_prune_keeps_what_the_policy_keeps_and_deletes_the_rest_manifest_last() {
    let running = "20260101T000002Z-00000002";
    let aws = aws(running);
    let ctx = context(&aws, false);
    let all = backups(&ctx);
    let plan = block_on(prune::handle(&ctx, scheduled())).unwrap();
    assert_eq!(decisions(&plan), expected(&all));
    let reason = |id: &str| {
        plan.backups
            .iter()
            .find(|d| d.backup_id == id)
            .unwrap()
            .reason
            .clone()
    };
    assert_eq!(reason(running), "a running execution uses it");
    assert_eq!(
        reason("20260101T000004Z-00000004"),
        "one of the newest 2 good backups"
    );
    assert!(reason("20260101T000005Z-00000005").starts_with("a failed backup and "));
    assert!(reason("20260101T000008Z-00000008").starts_with("a forensic dump and "));
    assert!(reason("20260101T000006Z-00000006").starts_with("younger than"));
    assert_eq!(plan.volumes, Vec::<String>::new());
    assert!(plan.databases.is_empty() && plan.servers_skipped.is_empty());

    // Every object of a pruned backup is gone, every kept one is whole.
    let keys = ctx.catalog().store.list("backstop/", None);
    let keys = block_on(keys).unwrap();
    for (m, action) in &all {
        let dir = format!(
            "{}/",
            ctx.catalog().backup_dir(&m.application, &m.backup_id)
        );
        let held = keys.iter().filter(|k| k.starts_with(&dir)).count();
        match action {
            Action::Prune => assert_eq!(held, 0, "{} pruned: {keys:?}", m.backup_id),
            Action::Keep => assert_eq!(held, 2, "{} kept: {keys:?}", m.backup_id),
        }
    }
    // The running executions, the replaced volumes, and each pruned backup's images and
    // snapshots (none): nothing else.
    let mut calls = vec![
        "states:ListExecutions",
        "ec2:DescribeVolumes",
        "ec2:DescribeVolumes",
    ];
    for _ in 0..3 {
        calls.extend(["ec2:DescribeImages", "ec2:DescribeSnapshots"]);
    }
    assert_eq!(aws.calls(), calls);

    // A second prune finds nothing more to do.
    let again = block_on(prune::handle(&ctx, scheduled())).unwrap();
    assert_eq!(again.to_prune().count(), 0, "{again:?}");
}

#[test]
fn mocked_a_dry_run_plans_the_same_and_changes_nothing() {
    let aws = aws("20260101T000002Z-00000002");
    let ctx = context(&aws, true);
    let all = backups(&ctx);
    let before = block_on(ctx.catalog().store.list("", None)).unwrap();
    let plan = block_on(prune::handle(&ctx, scheduled())).unwrap();
    assert_eq!(decisions(&plan), expected(&all));
    assert_eq!(
        block_on(ctx.catalog().store.list("", None)).unwrap(),
        before
    );
    let manifests = block_on(ctx.catalog().list(None)).unwrap().manifests;
    assert!(
        manifests.iter().all(|m| all.iter().any(|(a, _)| a == m)),
        "no manifest was even marked"
    );
    assert_eq!(
        aws.calls(),
        [
            "states:ListExecutions",
            "ec2:DescribeVolumes",
            "ec2:DescribeVolumes"
        ]
    );
    // The volumes asked for: the replaced ones, and those a killed drill left.
    let asked: Vec<String> = aws
        .bodies("ec2:DescribeVolumes")
        .iter()
        .map(|b| String::from_utf8_lossy(b).to_string())
        .collect();
    assert!(
        asked[0].contains("Filter.1.Value.1=backstop%3Afailed-state-of"),
        "{asked:?}"
    );
    assert!(
        asked[1].contains("Filter.1.Value.1=backstop%3Adrill"),
        "{asked:?}"
    );

    // The CLI's prune of one application, without a state machine: only that application's
    // backups are planned, and no execution is asked for.
    let aws = FakeAws::new().answer(
        "ec2:DescribeVolumes",
        ec2_empty("DescribeVolumes", "volumeSet"),
    );
    let (ctx, _) = memory_context(aws.shared(), Config::new("backups", "backstop"));
    backups(&ctx);
    let plan = block_on(prune::run(
        &ctx,
        &PruneTask {
            keep_last: 0,
            max_age_days: 0,
            dry_run: true,
            application: Some("billing".to_string()),
        },
    ))
    .unwrap();
    assert_eq!(
        decisions(&plan),
        [("20260101T000007Z-00000007".to_string(), Action::Prune)]
    );
    assert_eq!(aws.calls(), ["ec2:DescribeVolumes", "ec2:DescribeVolumes"]);
}
