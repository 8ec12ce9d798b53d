//! The protected deploy end to end: `backstop run` drives one execution of the real state
//! machine on the local state machine, with a throwaway PostgreSQL and instances in moto; guard
//! mode restores from a stage event, and from the status change of an execution stopped during
//! its deploy; the scheduled drill and prune run through the functions'
//! router on EventBridge `Scheduled Event`s, with their policy in the functions' environment.

use aws_sdk_ec2::types::Filter;
use serde_json::{json, Value};

use backstop_testbed::PgCluster;

use crate::support::{
    guarded, sample_event, table_checksums, Answering, Bed, TempFile, DESTRUCTIVE_MIGRATION,
    SHOP_SCHEMA,
};

/// The statement a deploy stand-in runs: a new order, so a restore is visible.
const NEW_ORDER: &str =
    "INSERT INTO orders (customer_id, product_id, qty, note) VALUES (1, 1, 1, 'placed by v1.5.0')";

/// A shell command running `sql` on `$SHOP_DB_URL` with the cluster's psql (the functions'
/// environment holds both).
fn psql_on_shop(sql: &str) -> String {
    format!("\"$PG_BIN_DIR/psql\" -q -v ON_ERROR_STOP=1 \"$SHOP_DB_URL\" -c \"{sql}\" >/dev/null")
}

/// A deploy stand-in that places a new order and succeeds.
fn deploy_placing_an_order() -> String {
    format!(
        "cat > /dev/null; {} && echo '{{\"deployed\": \"v1.5.0\"}}'",
        psql_on_shop(NEW_ORDER)
    )
}

const DEPLOY_OK: &str = "cat > /dev/null; echo '{\"deployed\": \"v1.5.0\"}'";

/// The shop database, `SHOP_DB_URL` pointing at it, and the local state machine with `envs`
/// and the stand-in `functions`.
fn shop_bed(envs: &[(&str, &str)], functions: &[(&str, &str)]) -> Bed {
    Bed::new()
        .database("shop", SHOP_SCHEMA)
        .db_url_env("SHOP_DB_URL", "shop")
        .local_state_machine(envs, functions)
        .build()
}

fn orders(bed: &Bed) -> String {
    bed.pg()
        .psql("shop", "SELECT count(*) FROM orders")
        .unwrap()
        .trim()
        .to_string()
}

fn run_document(bed: &Bed, instance_id: &str, deploy: &str, orders: &str) -> Value {
    json!({
        "application": "shop",
        "version": {"commit": "v1.5.0"},
        "targets": [
            {"type": "database", "url_env": "SHOP_DB_URL"},
            {"type": "instance", "instance_id": instance_id}
        ],
        "deploy": {"type": "lambda", "function_name": deploy},
        "checks": {
            "http": [{"url": format!("{}/moto-api/", bed.endpoint()), "expect_status": 200}],
            "sql": [{"query": "SELECT count(*) FROM orders", "expect": orders}]
        },
        "policy": {"first_wait_seconds": 1, "max_wait_seconds": 2}
    })
}

/// Each device of the instance is on a new volume (not the one in `original`) made from the
/// manifest's snapshot of that device.
fn assert_swapped_back(
    bed: &Bed,
    id: &str,
    original: &[(String, String, Option<String>)],
    manifest: &Value,
) {
    let now = bed.devices(id);
    for (device, old_volume, _) in original {
        let (_, new_volume, from) = now.iter().find(|(d, _, _)| d == device).unwrap();
        assert_ne!(new_volume, old_volume, "{device} swapped back");
        let want = manifest["instances"][0]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["device"] == device.as_str())
            .unwrap()["snapshot_id"]
            .as_str()
            .map(str::to_string);
        assert_eq!(from, &want, "{device}");
    }
}

/// The names in the outcome's `states`: every state left, in order.
fn exited(outcome: &Value) -> Vec<&str> {
    outcome["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap())
        .collect()
}

/// The outcome's cause, which the Fail states carry as JSON.
fn cause_of(outcome: &Value) -> Value {
    let text = outcome["cause"]
        .as_str()
        .unwrap_or_else(|| panic!("no cause: {outcome}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("cause is not JSON ({e}): {text}"))
}

fn execution_arn(outcome: &Value) -> &str {
    outcome["execution_arn"].as_str().unwrap()
}

#[test]
fn happy_path_backs_up_deploys_checks_and_succeeds() {
    let bed = shop_bed(&[], &[("shop-deploy", DEPLOY_OK)]);
    let orders = orders(&bed);
    let id = bed.launch_instance();
    let before = bed.devices(&id);
    let queue = bed.events_queue();
    // The proof before the deploy: the dump restored into a scratch database and counted.
    let mut doc = run_document(&bed, &id, "shop-deploy", &orders);
    doc["policy"]["restore_test"] = json!(true);
    let (run, outcome) = bed.cli().run_document(&doc);
    assert!(run.ok, "{}", run.all());
    assert_eq!(outcome["status"], "SUCCEEDED", "{outcome}");
    let states = exited(&outcome);
    for s in [
        "Prepare",
        "BackupTargets",
        "VerifyBackup",
        "DeployLambda",
        "VerifyDeploy",
    ] {
        assert!(states.contains(&s), "{s} not run: {states:?}");
    }
    assert!(!states.contains(&"RestoreTargets"), "{states:?}");
    let name = outcome["name"].as_str().unwrap();
    let manifest = bed.manifest("shop", name);
    assert_eq!(manifest["state"], "completed", "{manifest}");
    assert_eq!(manifest["databases"][0]["database"], "shop");
    assert_eq!(manifest["instances"][0]["instance_id"], id.as_str());
    assert_eq!(manifest["app_version"], "v1.5.0");
    // The deploy passed its checks, and the manifest says so: v1.5.0 runs from now on.
    assert!(
        manifest["deployed"]["checks"]
            .as_str()
            .unwrap()
            .contains("passed"),
        "{manifest}"
    );
    assert!(
        !bed.keys().iter().any(|k| k.contains("incident")),
        "no incident report for a protected deploy"
    );
    let published = bed.events(&queue);
    let kinds: Vec<&str> = published.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["BackupCompleted", "DeployProtected"],
        "{published:?}"
    );
    assert_eq!(published[1].1["backup_id"], name, "{published:?}");
    assert_eq!(published[1].1["commit"], "v1.5.0", "{published:?}");
    // Fields with nothing to say are left out of the detail.
    assert!(published[0].1.get("commit").is_none(), "{published:?}");
    let verified = published[0].1["summary"].as_str().unwrap();
    assert!(
        verified.contains(&format!("shop on 127.0.0.1:{}: ", bed.pg().port))
            && verified.contains("restore test: 3 tables match"),
        "{verified}"
    );
    assert!(
        bed.databases_named("backstop_verify").is_empty(),
        "the scratch database is dropped"
    );
    assert_eq!(bed.devices(&id), before, "nothing was restored");
}

#[test]
fn destructive_failed_deploy_is_restored_and_fails_with_deploy_failed() {
    let migration = TempFile::with("migration.sql", DESTRUCTIVE_MIGRATION);
    let deploy = format!(
        "cat > /dev/null; \"$PG_BIN_DIR/psql\" -q -v ON_ERROR_STOP=1 \"$SHOP_DB_URL\" -f {} >/dev/null && \
         echo 'migration 0042 failed after dropping orders.note' >&2; exit 1",
        migration.path()
    );
    let bed = shop_bed(
        &[],
        &[
            ("shop-migrate", &deploy),
            ("shop-ok", "cat > /dev/null; echo '{}'"),
        ],
    );
    let cli = bed.cli();
    let before = bed.table_checksums("shop");
    let orders = orders(&bed);
    let id = bed.launch_instance();
    // v1.4.2 was deployed under Backstop and passed its checks: it is what the next backup
    // holds.
    let mut previous = run_document(&bed, &id, "shop-ok", &orders);
    previous["version"]["commit"] = json!("v1.4.2");
    let (ok, _) = cli.run_document(&previous);
    assert!(ok.ok, "{}", ok.all());
    let original = bed.devices(&id);
    let queue = bed.events_queue();
    let (run, outcome) = cli.run_document(&run_document(&bed, &id, "shop-migrate", &orders));
    assert!(!run.ok, "a failed deploy fails the run: {}", run.all());
    assert_eq!(outcome["status"], "FAILED", "{outcome}");
    assert_eq!(outcome["error"], "DeployFailed", "{outcome}");
    let cause = cause_of(&outcome);
    assert_eq!(cause["error"], "CommandFailed", "{cause}");
    assert!(
        cause["cause"]
            .as_str()
            .unwrap()
            .contains("migration 0042 failed"),
        "{cause}"
    );
    assert_eq!(cause["backup_id"], outcome["name"]);
    let restored = cause["restored"].to_string();
    assert!(restored.contains("database shop"), "{restored}");
    assert!(restored.contains(&id), "{restored}");

    // The incident report, JSON and Markdown, beside the backup.
    let name = outcome["name"].as_str().unwrap();
    let report = bed.get_json(&format!("backstop/shop/{name}/incident.json"));
    assert_eq!(report["outcome"], "DeployFailed", "{report}");
    assert_eq!(report["original_error"], "CommandFailed", "{report}");
    assert!(
        report["original_cause"]
            .as_str()
            .unwrap()
            .contains("migration 0042 failed after dropping orders.note"),
        "{report}"
    );
    assert_eq!(report["versions"]["deploy_commit"], "v1.5.0", "{report}");
    assert_eq!(report["versions"]["backup_commit"], "v1.4.2", "{report}");
    let timeline: Vec<&str> = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    let order = [
        "Prepare",
        "BackupTargets",
        "VerifyBackup",
        "DeployLambda",
        "RestoreTargets",
        "VerifyRestore",
        "ReportDeployFailure",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|s| {
            timeline
                .iter()
                .position(|t| t == s)
                .unwrap_or_else(|| panic!("{s} not in {timeline:?}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{timeline:?}");
    assert!(
        report["restore_seconds"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert_eq!(report["restored"].as_array().unwrap().len(), 2, "{report}");
    let kept = report["failed_state"].to_string();
    assert!(kept.contains("database shop_failed_"), "{kept}");
    assert_eq!(kept.matches("volume vol-").count(), 2, "{kept}");
    assert!(
        report["checks"].to_string().contains("after the restore"),
        "{report}"
    );
    let md = String::from_utf8(bed.get(&format!("backstop/shop/{name}/incident.md"))).unwrap();
    assert!(
        md.starts_with("# Incident: shop deploy v1.5.0 (DeployFailed)"),
        "{md}"
    );
    assert!(md.contains("| ReportDeployFailure |"), "{md}");
    // People are told: the backup, then the failed deploy and what was restored.
    let published = bed.events(&queue);
    let kinds: Vec<&str> = published.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["BackupCompleted", "DeployFailedRestored"],
        "{published:?}"
    );
    let detail = &published[1].1;
    assert_eq!(detail["backup_id"], name, "{detail}");
    assert!(
        detail["summary"]
            .as_str()
            .unwrap()
            .starts_with("the deploy failed (CommandFailed); restored: database shop"),
        "{detail}"
    );
    assert_eq!(
        detail["incident_report"],
        format!("s3://{}/backstop/shop/{name}/incident.md", bed.bucket)
    );
    // The CLI reads it back.
    let shown = cli.catalog(&["incidents", "show", "--backup-id", name]);
    assert!(shown.ok, "{}", shown.all());
    assert_eq!(shown.stdout, md);
    let listed = cli.catalog(&["incidents", "list"]);
    assert!(listed.ok, "{}", listed.all());
    assert!(listed.stdout.contains(name), "{}", listed.stdout);
    assert_eq!(listed.stdout.lines().count(), 2, "{}", listed.stdout);

    // The data is back, table by table, and the broken database is kept.
    assert_eq!(bed.table_checksums("shop"), before);
    assert!(
        !bed.databases_named("shop_failed_").is_empty(),
        "{:?}",
        bed.databases()
    );
    // Each device is on a new volume from the backup's snapshot; the old ones are kept.
    let manifest = bed.manifest("shop", name);
    assert_swapped_back(&bed, &id, &original, &manifest);
    let ec2 = bed.ec2();
    for (_, old_volume, _) in &original {
        let kept = bed
            .rt
            .block_on(ec2.describe_volumes().volume_ids(old_volume).send())
            .unwrap();
        assert_eq!(kept.volumes().len(), 1, "the replaced volume is kept");
    }
}

/// The top-level states of the protect state machine that come after the backup.
const AFTER_BACKUP: [&str; 10] = [
    "VerifyBackup",
    "ChooseDeploy",
    "DeployLambda",
    "DeployCodeBuild",
    "VerifyDeploy",
    "Protected",
    "RestoreTargets",
    "VerifyRestore",
    "DeployFailed",
    "RestoreFailed",
];

#[test]
fn http_check_still_failing_after_the_restore_fails_with_restore_failed() {
    let health = Answering::start("500 Internal Server Error");
    let bed = shop_bed(&[], &[("shop-deploy", &deploy_placing_an_order())]);
    let before = bed.table_checksums("shop");
    let orders = orders(&bed);
    let id = bed.launch_instance();
    let mut doc = run_document(&bed, &id, "shop-deploy", &orders);
    doc["checks"]["http"] = json!([{"url": health.url(), "expect_status": 200}]);
    let (run, outcome) = bed.cli().run_document(&doc);
    assert!(!run.ok, "{}", run.all());
    assert_eq!(outcome["status"], "FAILED", "{outcome}");
    assert_eq!(outcome["error"], "RestoreFailed", "{outcome}");
    // The cause is the check that still fails after the restore, with what was restored
    // and the deploy's own failure.
    let cause = cause_of(&outcome);
    assert_eq!(cause["errorType"], "VerificationFailed", "{cause}");
    let message = cause["errorMessage"].as_str().unwrap();
    for want in [
        format!("GET {} answered 500, expected 200", health.url()),
        "still after the restore".to_string(),
        "database shop".to_string(),
        id.clone(),
        "the deploy failed with VerificationFailed".to_string(),
    ] {
        assert!(message.contains(&want), "{want:?} not in {message}");
    }
    bed.assert_entered(
        execution_arn(&outcome),
        &[
            "DeployLambda",
            "VerifyDeploy",
            "RestoreTargets",
            "VerifyRestore",
        ],
    );
    assert!(
        health.hits() >= 2,
        "checked after the deploy and after the restore"
    );
    // The restore itself ran: the order the deploy placed is gone.
    assert_eq!(bed.table_checksums("shop"), before);
}

#[test]
fn sql_check_failing_after_the_deploy_is_restored_and_fails_with_deploy_failed() {
    let bed = shop_bed(&[], &[("shop-deploy", &deploy_placing_an_order())]);
    let before = bed.table_checksums("shop");
    let orders = orders(&bed);
    let id = bed.launch_instance();
    let (run, outcome) = bed
        .cli()
        .run_document(&run_document(&bed, &id, "shop-deploy", &orders));
    assert!(!run.ok, "{}", run.all());
    assert_eq!(outcome["status"], "FAILED", "{outcome}");
    assert_eq!(outcome["error"], "DeployFailed", "{outcome}");
    // The cause names the check that failed after the deploy, and what the restore did.
    let cause = cause_of(&outcome);
    assert_eq!(cause["error"], "VerificationFailed", "{cause}");
    let original: Value = serde_json::from_str(cause["cause"].as_str().unwrap()).unwrap();
    assert_eq!(original["errorType"], "VerificationFailed", "{original}");
    let count: u64 = orders.parse().unwrap();
    // Which check, on which database, and only the shape of what it saw: never the value.
    let message = original["errorMessage"].as_str().unwrap();
    let want = format!(
        "SQL check 1 (SELECT count(*) FROM orders) on shop at 127.0.0.1:{} gave a value of {} \
         characters, not the expected value",
        bed.pg().port,
        (count + 1).to_string().len()
    );
    assert!(message.contains(&want), "{original}");
    assert!(!message.contains(&(count + 1).to_string()), "{original}");
    assert_eq!(cause["backup_id"], outcome["name"]);
    let restored = cause["restored"].to_string();
    assert!(restored.contains("database shop"), "{restored}");
    assert!(restored.contains(&id), "{restored}");
    assert!(
        cause["checks_after_restore"]
            .as_str()
            .unwrap()
            .contains("1 SQL and 0 alarm check(s) passed"),
        "{cause}"
    );
    bed.assert_entered(
        execution_arn(&outcome),
        &[
            "DeployLambda",
            "VerifyDeploy",
            "RestoreTargets",
            "VerifyRestore",
        ],
    );
    assert_eq!(bed.table_checksums("shop"), before);
}

#[test]
fn unreachable_database_fails_the_backup_and_never_deploys() {
    let marker = TempFile::new("deployed");
    let bed = Bed::new()
        .database("shop", SHOP_SCHEMA)
        .db_url_env("SHOP_DB_URL", "no_such_db")
        .local_state_machine(
            &[],
            &[(
                "shop-deploy",
                &format!("cat > /dev/null; touch {}; echo '{{}}'", marker.path()),
            )],
        )
        .build();
    let id = bed.launch_instance();
    let (run, outcome) = bed
        .cli()
        .run_document(&run_document(&bed, &id, "shop-deploy", "4000"));
    assert!(!run.ok, "{}", run.all());
    assert_eq!(outcome["status"], "FAILED", "{outcome}");
    assert_eq!(outcome["error"], "BackupFailed", "{outcome}");
    let cause = cause_of(&outcome);
    assert_eq!(cause["errorType"], "DatabaseError", "{cause}");
    assert!(
        cause["errorMessage"]
            .as_str()
            .unwrap()
            .contains("\"no_such_db\" does not exist"),
        "{cause}"
    );
    assert!(!marker.0.exists(), "the deploy ran");
    // The instance's part finished, but the backup as a whole is recorded as failed.
    let manifest = bed.manifest("shop", outcome["name"].as_str().unwrap());
    assert_eq!(manifest["state"], "failed", "{manifest}");
    assert!(
        manifest["error"]
            .as_str()
            .unwrap()
            .contains("DatabaseError"),
        "{manifest}"
    );
    let entered = bed.entered(execution_arn(&outcome));
    let backup = entered.iter().position(|s| s == "BackupTargets").unwrap();
    assert_eq!(entered.last().map(String::as_str), Some("BackupFailed"));
    assert!(
        entered.iter().any(|s| s == "RecordBackupFailure"),
        "{entered:?}"
    );
    for s in &entered[backup..] {
        assert!(!AFTER_BACKUP.contains(&s.as_str()), "{s} ran: {entered:?}");
    }
}

#[test]
fn corrupted_backup_fails_its_database_restore_while_the_instance_is_still_restored() {
    // The deploy places an order, flips 16 bytes in the middle of the backup's dump (same
    // size, so only the SHA-256 can tell) and fails. The script is written once the endpoint
    // is known.
    let script = TempFile::new("deploy.sh");
    let bed = shop_bed(&[], &[("shop-deploy", &format!("sh {}", script.path()))]);
    let pg = bed.pg();
    // What the deploy leaves: the same order placed in a copy taken now.
    pg.psql("postgres", "CREATE DATABASE shop_expected TEMPLATE shop")
        .unwrap();
    pg.psql("shop_expected", NEW_ORDER).unwrap();
    let expected = bed.table_checksums("shop_expected");
    assert_ne!(expected, bed.table_checksums("shop"));
    let orders = orders(&bed);
    let aws = format!(
        "{}/.venv/bin/aws --endpoint-url {} --region us-east-1",
        crate::support::root(),
        bed.endpoint()
    );
    std::fs::write(
        &script.0,
        format!(
            r#"set -e
id=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["backup_id"])')
{psql}
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
key="s3://{bucket}/backstop/shop/$id/db/127.0.0.1%3A{port}/shop.dump"
tmp=$(mktemp)
{aws} s3 cp --quiet "$key" "$tmp"
python3 -c 'import sys; p = sys.argv[1]; b = bytearray(open(p, "rb").read()); m = len(b) // 2; b[m:m + 16] = bytes(x ^ 0xFF for x in b[m:m + 16]); open(p, "wb").write(b)' "$tmp"
{aws} s3 cp --quiet "$tmp" "$key"
rm -f "$tmp"
echo 'release 1.5.0 failed to start' >&2
exit 1
"#,
            psql = psql_on_shop(NEW_ORDER),
            bucket = bed.bucket,
            port = pg.port,
        ),
    )
    .unwrap();
    let id = bed.launch_instance();
    let original = bed.devices(&id);
    let queue = bed.events_queue();
    let (run, outcome) = bed
        .cli()
        .run_document(&run_document(&bed, &id, "shop-deploy", &orders));
    assert!(!run.ok, "{}", run.all());
    assert_eq!(outcome["status"], "FAILED", "{outcome}");
    assert_eq!(outcome["error"], "RestoreFailed", "{outcome}");
    let kinds: Vec<String> = bed.events(&queue).into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["BackupCompleted", "RestoreFailed"]);
    // The database's restore stopped on the dump's SHA-256 (its size still matched); the
    // instance, its sibling in the restore Map, was restored all the same, and the cause
    // names both.
    let cause = cause_of(&outcome);
    assert_eq!(cause["errorType"], "RestoreIncomplete", "{cause}");
    let message = cause["errorMessage"].as_str().unwrap();
    let name = outcome["name"].as_str().unwrap();
    let dump = format!(
        "database SHOP_DB_URL was not restored (ChecksumMismatch: \
         s3://{}/backstop/shop/{name}/db/127.0.0.1%3A{}/shop.dump has SHA-256",
        bed.bucket,
        bed.pg().port
    );
    assert!(message.contains(&dump), "{message}");
    assert!(
        message.contains(&format!(
            "restored: instance {id} (2 volumes from the backup's snapshots, running)"
        )),
        "{message}"
    );
    assert!(
        message.contains("the deploy failed with CommandFailed"),
        "{message}"
    );
    bed.assert_entered(
        execution_arn(&outcome),
        &[
            "VerifyBackup",
            "DeployLambda",
            "RestoreTargets",
            "Restore",
            "RestoreTargetFailed",
            "VerifyRestore",
        ],
    );
    // Its incident report says what was not restored.
    let report = bed.get_json(&format!("backstop/shop/{name}/incident.json"));
    assert_eq!(report["outcome"], "RestoreFailed", "{report}");
    assert!(
        report["restore_failure"]
            .as_str()
            .unwrap()
            .starts_with("RestoreIncomplete: the restore is incomplete: database SHOP_DB_URL"),
        "{report}"
    );
    let manifest = bed.manifest("shop", name);
    assert_swapped_back(&bed, &id, &original, &manifest);
    // The live database is exactly what the deploy left; no swap happened and the scratch
    // restore database is gone.
    assert_eq!(bed.table_checksums("shop"), expected);
    let dbs = bed.databases();
    assert!(
        !dbs.iter()
            .any(|d| d.starts_with("shop_failed_") || d.starts_with("shop_restore_")),
        "{dbs:?}"
    );
}

#[test]
fn two_databases_and_two_instances_go_through_the_map() {
    let bed = Bed::new()
        .database("shop", SHOP_SCHEMA)
        .database("stock", SHOP_SCHEMA)
        .db_url_env("SHOP_DB_URL", "shop")
        .db_url_env("STOCK_DB_URL", "stock")
        .local_state_machine(&[], &[("shop-deploy", DEPLOY_OK)])
        .build();
    let orders = orders(&bed);
    let ids = [bed.launch_instance(), bed.launch_instance()];
    let mut doc = run_document(&bed, &ids[0], "shop-deploy", &orders);
    doc["targets"] = json!([
        {"type": "database", "url_env": "SHOP_DB_URL"},
        {"type": "database", "url_env": "STOCK_DB_URL"},
        {"type": "instance", "instance_id": ids[0]},
        {"type": "instance", "instance_id": ids[1]}
    ]);
    doc["checks"]["sql"][0]["database"] = json!("shop");
    let (run, outcome) = bed.cli().run_document(&doc);
    assert!(run.ok, "{}", run.all());
    assert_eq!(outcome["status"], "SUCCEEDED", "{outcome}");
    let states = exited(&outcome);
    assert_eq!(
        states.iter().filter(|s| **s == "StartBackup").count(),
        4,
        "{states:?}"
    );
    assert!(!states.contains(&"RestoreTargets"), "{states:?}");
    let manifest = bed.manifest("shop", outcome["name"].as_str().unwrap());
    assert_eq!(manifest["state"], "completed", "{manifest}");
    let names = |list: &str, field: &str| {
        let mut v: Vec<String> = manifest[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d[field].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("databases", "database"), ["shop", "stock"]);
    let mut want = ids.to_vec();
    want.sort();
    assert_eq!(names("instances", "instance_id"), want);
}

/// Two targets named `shop`, one on each of two servers, each holding different orders: the
/// backup keeps two dumps under two keys, and after a failed deploy broke both, each server's
/// `shop` is back to its own data (not the other's dump restored twice).
#[test]
fn same_database_name_on_two_servers_is_restored_each_from_its_own_dump() {
    let other = PgCluster::start().expect("a second cluster starts");
    other.create_db("shop").unwrap();
    other.psql_script("shop", SHOP_SCHEMA).unwrap();
    other
        .psql(
            "shop",
            "INSERT INTO orders (customer_id, product_id, qty, note) \
             VALUES (2, 1, 7, 'only on the second server')",
        )
        .unwrap();
    let other_url = other.url("shop");
    let breaks_both = "cat > /dev/null; for url in \"$SHOP_DB_URL\" \"$OTHER_SHOP_DB_URL\"; do \
         \"$PG_BIN_DIR/psql\" -q -v ON_ERROR_STOP=1 \"$url\" \
         -c \"UPDATE orders SET qty = 0, note = 'broken by v1.5.0'\" >/dev/null || exit 2; done; \
         echo 'v1.5.0 broke the orders' >&2; exit 1"
        .to_string();
    let bed = shop_bed(
        &[("OTHER_SHOP_DB_URL", &other_url)],
        &[("shop-deploy", &breaks_both)],
    );
    let before = (bed.table_checksums("shop"), table_checksums(&other, "shop"));
    assert_ne!(before.0, before.1, "the two servers' shops differ");
    let servers = [
        format!("127.0.0.1:{}", bed.pg().port),
        format!("127.0.0.1:{}", other.port),
    ];
    let id = bed.launch_instance();
    let mut doc = run_document(&bed, &id, "shop-deploy", "0");
    doc["targets"] = json!([
        {"type": "database", "url_env": "SHOP_DB_URL"},
        {"type": "database", "url_env": "OTHER_SHOP_DB_URL"}
    ]);
    doc["checks"] = json!({});
    let (run, outcome) = bed.cli().run_document(&doc);
    assert!(!run.ok, "{}", run.all());
    assert_eq!(outcome["error"], "DeployFailed", "{outcome}");

    // Two entries, one per server, each with its own dump.
    let name = outcome["name"].as_str().unwrap();
    let manifest = bed.manifest("shop", name);
    let entries = manifest["databases"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{manifest}");
    let mut seen: Vec<(String, String)> = entries
        .iter()
        .map(|d| {
            assert_eq!(d["database"], "shop", "{d}");
            (
                d["server"].as_str().unwrap().to_string(),
                d["artifact"]["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut want_servers = servers.to_vec();
    want_servers.sort();
    assert_eq!(
        seen.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(),
        want_servers
    );
    assert_ne!(seen[0].1, seen[1].1, "one key per server: {seen:?}");
    for (server, key) in &seen {
        assert!(
            key.ends_with(&format!("/db/{}/shop.dump", server.replace(':', "%3A"))),
            "{key}"
        );
        assert!(!bed.get(key).is_empty(), "{key}");
    }

    // Each server's shop holds its own orders again, and each kept its broken state.
    let restored = cause_of(&outcome)["restored"].to_string();
    for server in &servers {
        assert!(
            restored.contains(&format!(
                "database shop on {server} (3 tables, row counts match"
            )),
            "{restored}"
        );
    }
    assert_eq!(bed.table_checksums("shop"), before.0);
    assert_eq!(table_checksums(&other, "shop"), before.1);
    assert_eq!(bed.databases_named("shop_failed_").len(), 1);
    let kept = other
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'shop_failed_%'",
        )
        .unwrap();
    assert_eq!(kept.trim(), "1");
}

/// The stage event CodePipeline sends when stage `stage` of `shop-pipeline` changes state: the
/// sample event with these values.
fn stage_event(execution_id: &str, stage: &str, state: &str) -> Value {
    let mut event = sample_event("guard");
    event["id"] = json!(format!("event-{}", crate::support::unique()));
    event["resources"] = json!(["arn:aws:codepipeline:us-east-1:123456789012:shop-pipeline"]);
    event["detail"]["execution-id"] = json!(execution_id);
    event["detail"]["stage"] = json!(stage);
    event["detail"]["state"] = json!(state);
    event
}

#[test]
fn guard_mode_restores_the_backup_of_a_pipeline_execution_whose_deploy_stage_failed() {
    let bed = shop_bed(&[], &[]);
    let before = bed.table_checksums("shop");
    let orders = orders(&bed);
    let queue = bed.events_queue();
    // The pipeline's Backstop stage: backup and checks, no deploy step (the pipeline's own
    // Deploy stage deploys).
    let doc = json!({
        "application": "shop",
        "version": {"commit": "v1.5.0", "pipeline_execution_id": "pipe-exec-1"},
        "targets": [{"type": "database", "url_env": "SHOP_DB_URL"}],
        "checks": {"sql": [{"query": "SELECT count(*) FROM orders", "expect": orders}]},
        "policy": {"first_wait_seconds": 1, "max_wait_seconds": 2}
    });
    let (run, outcome) = bed.cli().run_document(&doc);
    assert!(run.ok, "{}", run.all());
    let backup_id = outcome["name"].as_str().unwrap().to_string();
    let manifest = bed.manifest("shop", &backup_id);
    assert_eq!(
        manifest["run"]["version"]["pipeline_execution_id"], "pipe-exec-1",
        "the verified backup records its run: {manifest}"
    );
    assert!(
        manifest.get("deployed").is_none(),
        "nothing was deployed yet: {manifest}"
    );
    // The pipeline's Deploy stage breaks the database, then fails.
    bed.pg().psql_script("shop", DESTRUCTIVE_MIGRATION).unwrap();
    assert_ne!(bed.table_checksums("shop"), before);
    // Guard runs in the test, on the bed, watching shop-pipeline:Deploy.
    let ctx = bed.context(guarded(bed.config()));
    let guard = |event: Value| {
        bed.rt
            .block_on(backstop_core::tasks::invoke(&ctx, "guard", event))
            .unwrap()
    };
    let machine = bed.state_machine_arn();

    // Not a failure, or not a guarded stage: nothing starts.
    let ignored = guard(stage_event("pipe-exec-1", "Deploy", "SUCCEEDED"));
    assert_eq!(ignored["outcome"], "ignored", "{ignored}");
    let ignored = guard(stage_event("pipe-exec-1", "Build", "FAILED"));
    assert_eq!(ignored["outcome"], "ignored", "{ignored}");
    assert_eq!(bed.executions(&machine), vec![backup_id.clone()]);

    let started = guard(stage_event("pipe-exec-1", "Deploy", "FAILED"));
    assert_eq!(started["outcome"], "restore_started", "{started}");
    assert_eq!(started["backup_id"], backup_id.as_str());
    let arn = started["execution_arn"].as_str().unwrap().to_string();
    // Guard recorded the request before it started the execution: that record, which only
    // guard's role may write, is what GuardRestore authorises the restore by.
    let execution_name = arn.rsplit(':').next().unwrap();
    let request = bed.get_json(&format!("backstop/_restore-requests/{execution_name}.json"));
    assert_eq!(request["application"], "shop", "{request}");
    assert_eq!(request["backup_id"], backup_id.as_str(), "{request}");
    assert_eq!(
        request["failure"]["Error"], "PipelineStageFailed",
        "{request}"
    );
    // EventBridge delivers the same event again, while the restore runs and after it ended.
    let again = guard(stage_event("pipe-exec-1", "Deploy", "FAILED"));
    assert_eq!(again["outcome"], "already_started", "{again}");
    assert_eq!(again["execution_arn"], arn.as_str());
    let ended = bed.finished(&arn);
    assert_eq!(ended.status().as_str(), "FAILED", "{ended:?}");
    assert_eq!(ended.error(), Some("DeployFailed"), "{ended:?}");
    let cause: Value = serde_json::from_str(ended.cause().unwrap()).unwrap();
    assert_eq!(cause["error"], "PipelineStageFailed", "{cause}");
    assert!(
        cause["cause"]
            .as_str()
            .unwrap()
            .contains("stage Deploy of pipeline shop-pipeline"),
        "{cause}"
    );
    assert_eq!(cause["backup_id"], backup_id.as_str(), "{cause}");
    assert_eq!(
        bed.table_checksums("shop"),
        before,
        "the data is back as the backup holds it"
    );
    bed.assert_entered(
        &arn,
        &[
            "Entry",
            "GuardRestore",
            "RestoreTargets",
            "VerifyRestore",
            "ReportDeployFailure",
        ],
    );
    assert!(
        !bed.entered(&arn)
            .iter()
            .any(|s| s == "Prepare" || s == "StartBackup"),
        "guard mode takes no new backup"
    );
    let after_restore = guard(stage_event("pipe-exec-1", "Deploy", "FAILED"));
    assert_eq!(
        after_restore["outcome"], "already_started",
        "{after_restore}"
    );
    assert_eq!(after_restore["status"], "FAILED", "{after_restore}");
    // The incident report lies beside the backup.
    let report = bed.get_json(&format!("backstop/shop/{backup_id}/incident.json"));
    assert_eq!(report["outcome"], "DeployFailed", "{report}");
    assert_eq!(report["execution_arn"], arn.as_str(), "{report}");

    // A pipeline execution Backstop took no backup for: reported, nothing restored.
    let unknown = guard(stage_event("pipe-exec-unknown", "Deploy", "FAILED"));
    assert_eq!(unknown["outcome"], "no_backup", "{unknown}");
    let mut names = bed.executions(&machine);
    names.sort();
    let mut expected = vec![backup_id.clone(), format!("guard-{backup_id}")];
    expected.sort();
    assert_eq!(names, expected, "exactly one restore execution was started");
    let events = bed.events(&queue);
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert!(types.contains(&"DeployFailedRestored"), "{types:?}");
    let (_, no_backup) = events
        .iter()
        .find(|(t, _)| t == "GuardFoundNoBackup")
        .unwrap_or_else(|| panic!("no GuardFoundNoBackup: {types:?}"));
    assert_eq!(
        no_backup["pipeline_execution_id"], "pipe-exec-unknown",
        "{no_backup}"
    );
}

/// EventBridge's `Step Functions Execution Status Change` for an execution that ended.
fn execution_event(machine: &str, arn: &str, name: &str, status: &str, error: Value) -> Value {
    json!({
        "version": "0",
        "id": format!("event-{}", crate::support::unique()),
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": crate::support::ACCOUNT,
        "time": "2026-12-07T12:00:00Z",
        "region": crate::support::REGION,
        "resources": [arn],
        "detail": {"executionArn": arn, "stateMachineArn": machine, "name": name,
                   "status": status, "error": error, "cause": null}
    })
}

#[test]
fn an_execution_stopped_during_its_deploy_is_restored_by_guard_from_its_status_change() {
    // The deploy places an order, then hangs: the execution is stopped while it deploys, so
    // no Catch ever runs and the state machine itself never restores.
    let hanging = format!("{}; sleep 10; echo '{{}}'", deploy_placing_an_order());
    let bed = shop_bed(&[], &[("shop-deploy-hangs", hanging.as_str())]);
    let before = bed.table_checksums("shop");
    let orders = orders(&bed);
    let machine = bed.state_machine_arn();
    let queue = bed.events_queue();
    let doc = json!({
        "application": "shop",
        "version": {"commit": "v1.5.0"},
        "targets": [{"type": "database", "url_env": "SHOP_DB_URL"}],
        "deploy": {"type": "lambda", "function_name": "shop-deploy-hangs"},
        "checks": {"sql": [{"query": "SELECT count(*) FROM orders", "expect": orders}]},
        "policy": {"first_wait_seconds": 1, "max_wait_seconds": 2}
    });
    let name = format!("shop-{}", crate::support::unique());
    let sfn = bed.sfn();
    let arn = bed
        .rt
        .block_on(
            sfn.start_execution()
                .state_machine_arn(&machine)
                .name(&name)
                .input(doc.to_string())
                .send(),
        )
        .unwrap()
        .execution_arn()
        .to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !bed.entered(&arn).iter().any(|s| s == "DeployLambda") {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            bed.entered(&arn)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The new order lands, then the execution is stopped mid-deploy.
    while bed.table_checksums("shop") == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the deploy never wrote"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    bed.rt
        .block_on(sfn.stop_execution().execution_arn(&arn).send())
        .unwrap();
    assert_eq!(bed.finished(&arn).status().as_str(), "ABORTED");

    let ctx = bed.context(guarded(bed.config()));
    let guard = |event: Value| {
        bed.rt
            .block_on(backstop_core::tasks::invoke(&ctx, "guard", event))
            .unwrap()
    };
    let stopped = execution_event(&machine, &arn, &name, "ABORTED", Value::Null);
    let started = guard(stopped.clone());
    assert_eq!(started["outcome"], "restore_started", "{started}");
    assert_eq!(started["backup_id"], name.as_str());
    let restore = started["execution_arn"].as_str().unwrap().to_string();
    // EventBridge delivers it again: the restore is started once.
    let again = guard(stopped);
    assert_eq!(again["outcome"], "already_started", "{again}");
    let ended = bed.finished(&restore);
    assert_eq!(ended.error(), Some("DeployFailed"), "{ended:?}");
    let cause: Value = serde_json::from_str(ended.cause().unwrap()).unwrap();
    assert_eq!(cause["error"], "ExecutionAborted", "{cause}");
    assert_eq!(
        bed.table_checksums("shop"),
        before,
        "the order the interrupted deploy placed is gone: the data is the backup's"
    );
    let events = bed.events(&queue);
    let interrupted = events
        .iter()
        .find(|(t, _)| t == "DeployInterrupted")
        .unwrap_or_else(|| panic!("no DeployInterrupted: {events:?}"));
    assert_eq!(interrupted.1["backup_id"], name.as_str(), "{interrupted:?}");

    // The restore's own end, and an end through the state machine's own path, are not acted on.
    let restore_name = format!("guard-{name}");
    let own = guard(execution_event(
        &machine,
        &restore,
        &restore_name,
        "FAILED",
        json!("DeployFailed"),
    ));
    assert_eq!(own["outcome"], "ignored", "{own}");
    let designed = guard(execution_event(
        &machine,
        &arn,
        &name,
        "FAILED",
        json!("DeployFailed"),
    ));
    assert_eq!(designed["outcome"], "ignored", "{designed}");
    let mut names = bed.executions(&machine);
    names.sort();
    let mut expected = vec![restore_name, name];
    expected.sort();
    assert_eq!(names, expected, "one restore, started once");
}

#[test]
fn restore_drill_restores_the_latest_good_backup_into_scratch_and_leaves_nothing() {
    // The drill schedule's function waits at most this long for a new volume.
    let bed = shop_bed(
        &[("BACKSTOP_DRILL_VOLUME_WAIT_SECONDS", "120")],
        &[("shop-ok", "cat > /dev/null; echo '{}'")],
    );
    let cli = bed.cli();
    let ec2 = bed.ec2();
    let orders = orders(&bed);
    let id = bed.launch_instance();
    let (run, outcome) = cli.run_document(&run_document(&bed, &id, "shop-ok", &orders));
    assert!(run.ok, "{}", run.all());
    let backup_id = outcome["name"].as_str().unwrap().to_string();
    let manifest = bed.manifest("shop", &backup_id);
    let snapshots: Vec<String> = manifest["instances"][0]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["snapshot_id"].as_str().unwrap().to_string())
        .collect();
    let volume_count = || {
        bed.rt
            .block_on(ec2.describe_volumes().send())
            .unwrap()
            .volumes()
            .len()
    };
    let volumes_before = volume_count();
    let queue = bed.events_queue();
    // The drill schedule fires: EventBridge's Scheduled Event through the functions' router.
    let drill = || {
        let out = bed.local().invoke("drill", &sample_event("drill"));
        let list = out
            .as_array()
            .unwrap_or_else(|| panic!("drill answered {out}"));
        assert_eq!(list.len(), 1, "one application: {out}");
        out[0].clone()
    };
    let leftovers = || {
        let drill_volumes = bed
            .rt
            .block_on(
                ec2.describe_volumes()
                    .filters(
                        Filter::builder()
                            .name("tag-key")
                            .values("backstop:drill")
                            .build(),
                    )
                    .send(),
            )
            .unwrap();
        (
            bed.databases_named("backstop_verify"),
            drill_volumes.volumes().len(),
        )
    };
    // Anything but a Scheduled Event is refused, and drills nothing.
    let (error, _) = bed.local().invoke_raw("drill", &json!({}));
    assert_eq!(error.as_deref(), Some("InvalidInput"));

    let passed = drill();
    assert_eq!(passed["passed"], true, "{passed}");
    assert_eq!(passed["backup_id"], backup_id.as_str());
    assert_eq!(
        passed["databases"][0]["database"],
        format!("shop on 127.0.0.1:{}", bed.pg().port)
    );
    assert_eq!(
        passed["databases"][0]["tables_matched"],
        manifest["databases"][0]["tables"].as_array().unwrap().len(),
        "every table restored with the manifest's row count: {passed}"
    );
    let drilled: Vec<String> = passed["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["snapshot_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(drilled, snapshots, "a volume from each snapshot: {passed}");
    assert_eq!(
        passed["cleaned_up"].as_array().unwrap().len(),
        snapshots.len(),
        "{passed}"
    );
    assert_eq!(leftovers(), (vec![], 0), "the drill leaves nothing behind");
    assert_eq!(volume_count(), volumes_before);
    let key = passed["report_key"].as_str().unwrap();
    assert!(
        key.starts_with(&format!("backstop/shop/{backup_id}/drill-")),
        "{key}"
    );
    assert_eq!(
        bed.get_json(key),
        passed,
        "the report in the catalog is the one returned"
    );

    // The dump is corrupted in place (same size, 16 bytes flipped): the drill fails on it,
    // still drills the volumes, and again leaves nothing behind.
    let dump_key = manifest["databases"][0]["artifact"]["key"]
        .as_str()
        .unwrap();
    let mut dump = bed.get(dump_key);
    let middle = dump.len() / 2;
    for b in &mut dump[middle..middle + 16] {
        *b ^= 0xff;
    }
    bed.put(dump_key, dump);
    let failed = drill();
    assert_eq!(failed["passed"], false, "{failed}");
    let error = failed["databases"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("ChecksumMismatch"), "{error}");
    assert!(
        failed["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["error"].is_null()),
        "the volumes still pass: {failed}"
    );
    assert_eq!(
        leftovers(),
        (vec![], 0),
        "a failed drill leaves nothing either"
    );
    // The CLI runs the same drill and exits non-zero on a failed one.
    let drilled = cli.catalog(&["drill"]);
    assert!(!drilled.ok, "{}", drilled.all());
    assert!(
        drilled.stdout.contains("drill failed on 1 database(s)"),
        "{}",
        drilled.all()
    );
    assert!(drilled.stderr.contains("DrillFailed"), "{}", drilled.all());
    assert_eq!(leftovers(), (vec![], 0), "{}", drilled.all());
    let events = bed.events(&queue);
    let drills: Vec<(&str, &Value)> = events
        .iter()
        .filter(|(t, _)| t.starts_with("Drill"))
        .map(|(t, d)| (t.as_str(), d))
        .collect();
    assert_eq!(
        drills.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        ["DrillPassed", "DrillFailed", "DrillFailed"],
        "{events:?}"
    );
    assert!(
        drills[1].1["summary"].as_str().unwrap().contains(&format!(
            "database shop on 127.0.0.1:{}: ChecksumMismatch",
            bed.pg().port
        )),
        "{:?}",
        drills[1]
    );
}

#[test]
fn prune_drops_the_failed_state_and_scratch_databases_older_than_the_policy() {
    // The retention schedule's policy, in the functions' environment as the template sets it.
    let bed = shop_bed(
        &[
            ("BACKSTOP_RETENTION_KEEP_LAST", "1"),
            ("BACKSTOP_RETENTION_MAX_AGE_DAYS", "1"),
            ("BACKSTOP_RETENTION_DRY_RUN", "false"),
        ],
        &[],
    );
    let cli = bed.cli();
    let orders = orders(&bed);
    let doc = json!({
        "application": "shop",
        "targets": [{"type": "database", "url_env": "SHOP_DB_URL"}],
        "checks": {"sql": [{"query": "SELECT count(*) FROM orders", "expect": orders}]},
        "policy": {"first_wait_seconds": 1, "max_wait_seconds": 2}
    });
    let (run, _) = cli.run_document(&doc);
    assert!(run.ok, "{}", run.all());
    let young = format!(
        "shop_failed_{}",
        backstop_core::db::restore::timestamp(time::OffsetDateTime::now_utc())
    );
    // What restores and drills leave, each marked as Backstop marks it, and a database
    // someone named like a failed state without the mark.
    for (db, comment) in [
        (
            "shop_failed_20200101000000",
            "backstop:failed-state of shop",
        ),
        (young.as_str(), "backstop:failed-state of shop"),
        (
            "backstop_verify_20200101000000_0a1b",
            "backstop:verify-scratch restore test",
        ),
        ("shopping_failed_20200101000000", "backstop:failed-state"),
        (
            "shop_failed_20200101000001",
            "the 2020 archive, kept by hand",
        ),
    ] {
        bed.pg().create_db(db).unwrap();
        bed.pg()
            .psql(
                "postgres",
                &format!("COMMENT ON DATABASE \"{db}\" IS '{comment}'"),
            )
            .unwrap();
    }
    let left = || {
        let mut all = bed.databases_named("shop");
        all.extend(bed.databases_named("backstop_"));
        all.sort();
        all
    };
    let everything = left();
    let planned = |plan: &Value| -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = plan["databases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["database"].as_str().unwrap().to_string(),
                    d["kind"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        found.sort();
        found
    };
    let expected = vec![
        (
            "backstop_verify_20200101000000_0a1b".to_string(),
            "drill scratch".to_string(),
        ),
        (
            "shop_failed_20200101000000".to_string(),
            "failed state".to_string(),
        ),
    ];
    let prune_args = ["prune", "--keep-last", "1", "--max-age-days", "1"];
    // The operator's dry run, where SHOP_DB_URL is set: the same plan, nothing dropped.
    let dry = cli
        .clone()
        .with_env("SHOP_DB_URL", &bed.pg().url("shop"))
        .catalog_json(&[&prune_args[..], &["--dry-run"][..]].concat());
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(planned(&dry["plan"]), expected, "{dry}");
    assert_eq!(left(), everything, "a dry run drops nothing");
    // The prune function takes only the schedule's event; its policy is its own.
    let (error, _) = bed.local().invoke_raw(
        "prune",
        &json!({"keep_last": 0, "max_age_days": 0, "dry_run": false}),
    );
    assert_eq!(error.as_deref(), Some("InvalidInput"));
    assert_eq!(left(), everything, "a refused event drops nothing");

    // The retention schedule fires.
    let done = bed.local().invoke("prune", &sample_event("prune"));
    assert_eq!(planned(&done), expected, "{done}");
    let mut kept = vec![
        "shop".to_string(),
        young.clone(),
        "shopping_failed_20200101000000".to_string(),
        "shop_failed_20200101000001".to_string(),
    ];
    kept.sort();
    assert_eq!(
        left(),
        kept,
        "the young failed state and what is not Backstop's (by name or by mark) stay"
    );
    assert!(
        done["servers_skipped"].as_array().unwrap().is_empty(),
        "{done}"
    );

    // The CLI runs without SHOP_DB_URL: it says so and searches no server.
    let out = cli.catalog_json(&[&prune_args[..], &["--dry-run"][..]].concat());
    let skipped = out["plan"]["servers_skipped"][0]
        .as_str()
        .unwrap_or_default();
    assert!(skipped.contains("SHOP_DB_URL"), "{out}");
}

#[test]
fn bad_run_documents_are_invalid_input_and_touch_nothing() {
    let bed = shop_bed(&[], &[]);
    let id = bed.launch_instance();
    let sfn = bed.sfn();
    let machine = bed.state_machine_arn();

    // The local router refuses what Lambda would (a payload over 6 MiB) and a head without
    // end, with 413 and without reading on; then serves the next request as before.
    let local = bed.local();
    let huge = local.send_raw(
        "POST /2015-03-31/functions/backstop-drill/invocations HTTP/1.1\r\n\
         Host: x\r\nContent-Length: 7340032",
        b"{}",
    );
    assert!(huge.starts_with("HTTP/1.1 413"), "{huge}");
    let endless = local.send_raw(
        &format!("GET / HTTP/1.1\r\nX-Filler: {}", "a".repeat(70 * 1024)),
        b"",
    );
    assert!(endless.starts_with("HTTP/1.1 413"), "{endless}");
    let (error, _) = local.invoke_raw("drill", &json!({}));
    assert_eq!(error.as_deref(), Some("InvalidInput"));

    // `backstop run` refuses a document without targets before starting anything.
    let mut doc = run_document(&bed, &id, "shop-deploy", "4000");
    doc.as_object_mut().unwrap().remove("targets");
    let (run, error) = bed.cli().run_document(&doc);
    assert!(!run.ok, "{}", run.all());
    assert_eq!(error["error"]["type"], "InvalidInput", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("targets"),
        "{error}"
    );
    assert!(bed.executions(&machine).is_empty());

    // An execution started directly with a malformed document ends in the Fail state.
    let mut doc = run_document(&bed, &id, "shop-deploy", "4000");
    doc["targets"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "disk", "disk_id": "d-1"}));
    // An execution started directly with `input`, run to its end: its ARN and description.
    let run_to_end = |name: &str, input: &Value| {
        let started = bed
            .rt
            .block_on(
                sfn.start_execution()
                    .state_machine_arn(&machine)
                    .name(name)
                    .input(input.to_string())
                    .send(),
            )
            .unwrap();
        let arn = started.execution_arn().to_string();
        let described = bed.finished(&arn);
        (arn, described)
    };
    let (arn, described) = run_to_end("malformed", &doc);
    let arn = arn.as_str();
    assert_eq!(described.status().as_str(), "FAILED", "{described:?}");
    assert_eq!(described.error(), Some("InvalidInput"), "{described:?}");
    let cause: Value = serde_json::from_str(described.cause().unwrap()).unwrap();
    assert_eq!(cause["errorType"], "InvalidInput", "{cause}");
    assert!(
        cause["errorMessage"].as_str().unwrap().contains("disk"),
        "{cause}"
    );
    assert_eq!(
        bed.entered(arn),
        ["Entry", "Prepare", "InvalidRunDocument"],
        "only the document was read"
    );
    assert!(bed.keys().is_empty(), "{:?}", bed.keys());

    // A restore entry nobody authorised (guard records each one in the catalog before it
    // starts it): refused by GuardRestore, nothing restored or written.
    let forged = json!({"restore_of": {
        "application": "shop",
        "backup_id": "20261101T000000Z-0badc0de",
        "failure": {"Error": "PipelineStageFailed", "Cause": "forged"}
    }});
    let (arn, described) = run_to_end("forged-restore", &forged);
    let arn = arn.as_str();
    assert_eq!(described.status().as_str(), "FAILED", "{described:?}");
    let cause: Value = serde_json::from_str(described.cause().unwrap()).unwrap();
    assert_eq!(cause["errorType"], "NotAllowed", "{cause}");
    assert_eq!(
        bed.entered(arn),
        ["Entry", "GuardRestore", "InvalidRunDocument"],
        "refused before any restore"
    );
    assert!(bed.keys().is_empty(), "{:?}", bed.keys());
    let ec2 = bed.ec2();
    for (device, volume, _) in bed.devices(&id) {
        let snapshots = bed
            .rt
            .block_on(
                ec2.describe_snapshots()
                    .filters(Filter::builder().name("volume-id").values(&volume).build())
                    .send(),
            )
            .unwrap();
        assert!(snapshots.snapshots().is_empty(), "{device}: {snapshots:?}");
    }
}
