//! verify's records in the manifest: a failed backup is recorded as failed even before any
//! part wrote a manifest, and a part finishing later cannot make it good again; the backup's
//! verification refuses a failed manifest; a deploy that passed its checks is recorded as
//! `deployed`, and only on a backup that exists. AWS is the recording fake, so the calls each
//! mode makes (and the events it publishes) are exact.

use backstop_core::catalog::Catalog;
use backstop_core::model::manifest::{BackupState, Manifest};
use backstop_core::tasks::invoke;
use backstop_core::{Config, Context};
use serde_json::{json, Value};

use std::time::{Duration, Instant};

use backstop_core::checks::ROUND_RESERVE;
use backstop_core::deadline;

use crate::support::{memory_context, Answering, FakeAws};
use crate::{block_on, database_part, day, manifest};

const ID: &str = "20261125T150000Z-0badc0de";

fn context(aws: &FakeAws) -> Context {
    memory_context(aws.shared(), Config::new("backups", "backstop")).0
}

fn read(catalog: &Catalog, id: &str) -> Option<Manifest> {
    block_on(catalog.read_manifest("shop", id)).unwrap()
}

fn verify(ctx: &Context, task: Value) -> Result<Value, backstop_core::Error> {
    block_on(invoke(ctx, "verify", task))
}

#[test]
fn mocked_backup_failed_records_a_failed_manifest_and_a_later_part_merging_into_it_stays_failed() {
    let aws = FakeAws::new().accepting_events();
    let ctx = context(&aws);
    let failure = json!({"Error": "DumpFailed", "Cause": "pg_dump: error: connection lost"});
    let out = verify(
        &ctx,
        json!({"mode": "backup_failed", "backup_id": ID, "application": "shop", "failure": failure}),
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"summary": format!("backup {ID} marked failed"),
               "cause": "DumpFailed: pg_dump: error: connection lost"})
    );
    // No part had written a manifest yet: one is written, failed, holding nothing.
    let m = read(ctx.catalog(), ID).expect("a manifest is written");
    assert_eq!(m.state, BackupState::Failed);
    assert_eq!(
        m.error.as_deref(),
        Some("DumpFailed: pg_dump: error: connection lost")
    );
    assert!(m.databases.is_empty() && m.instances.is_empty(), "{m:?}");
    assert_eq!(
        aws.published(),
        [(
            "BackupFailed".to_string(),
            json!({"summary": "DumpFailed: pg_dump: error: connection lost",
                   "application": "shop", "backup_id": ID})
        )]
    );

    // Another target of the same backup finishes later and merges its part in: the part is
    // kept, the backup stays failed with its first error.
    let mut part = manifest("shop", ID, day(1), BackupState::Completed);
    part.databases.push(database_part(
        "stock",
        &format!("backstop/shop/{ID}/db/stock.dump"),
        10,
    ));
    let merged = block_on(
        ctx.catalog()
            .update_manifest("shop", ID, |current| Ok(part.clone().merged_into(current))),
    )
    .unwrap();
    assert_eq!(merged.state, BackupState::Failed);
    assert_eq!(merged.databases.len(), 1);
    assert_eq!(read(ctx.catalog(), ID).unwrap(), merged);

    // Recorded twice (a retried state): still failed, with the first failure.
    verify(
        &ctx,
        json!({"mode": "backup_failed", "backup_id": ID, "application": "shop",
               "failure": {"Error": "States.Timeout", "Cause": "later"}}),
    )
    .unwrap();
    let m = read(ctx.catalog(), ID).unwrap();
    assert_eq!(m.state, BackupState::Failed);
    assert_eq!(
        m.error.as_deref(),
        Some("DumpFailed: pg_dump: error: connection lost")
    );
    assert_eq!(m.databases.len(), 1, "the part is kept");
    assert_eq!(aws.calls(), ["events:PutEvents", "events:PutEvents"]);
}

#[test]
fn verify_backup_refuses_a_failed_manifest_with_backup_not_usable() {
    let aws = FakeAws::new();
    let ctx = context(&aws);
    let mut failed = manifest("shop", ID, day(1), BackupState::Failed);
    failed.error = Some("DumpFailed: pg_dump: killed by signal 9".to_string());
    failed.databases.push(database_part(
        "shop",
        &format!("backstop/shop/{ID}/db/shop.dump"),
        10,
    ));
    block_on(ctx.catalog().write_manifest(&failed)).unwrap();
    let err = verify(
        &ctx,
        json!({"mode": "backup", "backup_id": ID, "application": "shop"}),
    )
    .unwrap_err();
    assert_eq!(err.error_type(), "BackupNotUsable", "{err}");
    assert!(
        err.to_string()
            .contains("is failed: DumpFailed: pg_dump: killed by signal 9"),
        "{err}"
    );
    // A backup with no manifest at all is not found.
    let err = verify(
        &ctx,
        json!({"mode": "backup", "backup_id": "20261125T150000Z-00000000", "application": "shop"}),
    )
    .unwrap_err();
    assert_eq!(err.error_type(), "BackupNotFound", "{err}");
    assert_eq!(aws.calls(), Vec::<String>::new(), "refused before any call");
    assert_eq!(read(ctx.catalog(), ID).unwrap(), failed, "nothing recorded");
}

fn run_document(deploy: Value) -> Value {
    json!({
        "application": "shop",
        "version": {"commit": "v1.5.0"},
        "targets": [{"type": "database", "url_env": "SHOP_DB_URL"}],
        "deploy": deploy
    })
}

#[test]
fn mocked_deployment_records_deployed_on_an_existing_manifest_and_refuses_a_missing_one() {
    let aws = FakeAws::new().accepting_events();
    let ctx = context(&aws);
    let good = manifest("shop", ID, day(1), BackupState::Completed);
    block_on(ctx.catalog().write_manifest(&good)).unwrap();
    let lambda = json!({"type": "lambda", "function_name": "shop-deploy"});

    let out = verify(
        &ctx,
        json!({"mode": "deployment", "run": run_document(lambda.clone()), "backup_id": ID}),
    )
    .unwrap();
    assert_eq!(out["status"], "PASSED", "{out}");
    assert_eq!(out["summary"], "no checks configured", "{out}");
    let m = read(ctx.catalog(), ID).unwrap();
    let deployed = m.deployed.as_ref().expect("the deploy is recorded");
    assert_eq!(deployed.checks, "no checks configured");
    assert_eq!(m.state, BackupState::Completed);
    assert_eq!(
        aws.published(),
        [(
            "DeployProtected".to_string(),
            json!({"summary": "no checks configured", "application": "shop",
                   "backup_id": ID, "commit": "v1.5.0"})
        )]
    );

    // A backup that does not exist: BackupNotFound, and no manifest is made up for it.
    let missing = "20261125T150000Z-00000000";
    let err = verify(
        &ctx,
        json!({"mode": "deployment", "run": run_document(lambda), "backup_id": missing}),
    )
    .unwrap_err();
    assert_eq!(err.error_type(), "BackupNotFound", "{err}");
    assert!(read(ctx.catalog(), missing).is_none());

    // Without a deploy step the pipeline deploys later (guard mode): nothing is recorded yet.
    let other = "20261125T160000Z-11111111";
    block_on(ctx.catalog().write_manifest(&manifest(
        "shop",
        other,
        day(2),
        BackupState::Completed,
    )))
    .unwrap();
    verify(
        &ctx,
        json!({"mode": "deployment", "run": run_document(json!({"type": "none"})), "backup_id": other}),
    )
    .unwrap();
    assert!(read(ctx.catalog(), other).unwrap().deployed.is_none());
    let kinds: Vec<String> = aws.published().into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["DeployProtected", "DeployProtected"]);
}

/// A run document whose one HTTP check asks `url`, baked `bake_seconds` in rounds one second
/// apart.
fn baked_run(url: &str, bake_seconds: u64) -> Value {
    let mut run = run_document(json!({"type": "lambda", "function_name": "shop-deploy"}));
    run["checks"] = json!({"http": [{"url": url, "expect_status": 200}],
        "consecutive": 1, "bake_seconds": bake_seconds, "interval_seconds": 1});
    run
}

#[test]
fn a_bake_longer_than_the_invocation_goes_on_in_the_next_one_instead_of_running_past_its_deadline()
{
    let health = Answering::start("200 OK");
    let aws = FakeAws::new().accepting_events();
    let ctx = context(&aws);
    block_on(
        ctx.catalog()
            .write_manifest(&manifest("shop", ID, day(1), BackupState::Completed)),
    )
    .unwrap();
    let task = json!({"mode": "deployment", "run": baked_run(&health.url(), 3), "backup_id": ID});
    // An invocation with room for one round and not a wait plus another: it hands the bake on.
    let deadline = Instant::now() + ROUND_RESERVE + Duration::from_millis(500);
    let started = Instant::now();
    let out = block_on(deadline::within(
        deadline,
        invoke(&ctx, "verify", task.clone()),
    ))
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out["status"], "PENDING", "{out}");
    assert_eq!(out["rounds"], 1, "{out}");
    assert_eq!(out["next_wait_seconds"], 1, "{out}");
    assert!(
        aws.published().is_empty(),
        "nothing published before the bake is over"
    );
    assert!(read(ctx.catalog(), ID).unwrap().deployed.is_none());

    // The next invocation carries on from that progress until the bake is over.
    let mut next = task;
    next["checks"] = out.clone();
    let done = verify(&ctx, next).unwrap();
    assert_eq!(done["status"], "PASSED", "{done}");
    assert!(done["rounds"].as_u64().unwrap() >= 2, "{done}");
    assert_eq!(done["started_at"], out["started_at"], "one bake, not two");
    assert!(read(ctx.catalog(), ID).unwrap().deployed.is_some());
    assert!(health.hits() >= 2);

    // A failing round fails the checks at once, whatever the progress.
    let broken = Answering::start("500 Internal Server Error");
    let task = json!({"mode": "deployment", "run": baked_run(&broken.url(), 60), "backup_id": ID,
        "checks": out});
    let err = verify(&ctx, task).unwrap_err();
    assert_eq!(err.error_type(), "VerificationFailed", "{err}");
}
