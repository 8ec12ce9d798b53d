//! `make demo`: one protected deploy of a sample application on the local default, told as a
//! short story with each phase's duration. `backstop-local` runs moto (S3, EC2 and a Step
//! Functions engine executing the real `statemachine/protect.asl.json`) with Backstop's
//! functions served on its Lambda port; a throwaway PostgreSQL holds the `shop` database and
//! moto an instance for its application server. `backstop run` starts the execution: backup,
//! a deploy whose migration is destructive and then fails, the restore, and `DeployFailed`.
//! The demo then shows what the deploy broke (in the kept failed database), the proof that
//! the data is back, and the incident report Backstop wrote. It drives the real `backstop` binary, as an operator would.

use std::process::Command;
use std::time::Instant;

use backstop_testbed::PgCluster;
use serde_json::{json, Value};

const SHOP: &str = include_str!("shop.sql");
const MIGRATION: &str = include_str!("destructive-migration.sql");

#[path = "support/local.rs"]
mod local;
use local::{project_binary, LocalServer};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}

struct Phase(Instant);

impl Phase {
    fn start(title: &str) -> Phase {
        println!("\n== {title}");
        Phase(Instant::now())
    }
    fn done(self) {
        println!("   ({:.2} s)", self.0.elapsed().as_secs_f64());
    }
}

/// The demo's `backstop-local`, its PostgreSQL and the CLI.
struct Local {
    server: LocalServer,
    pg: PgCluster,
    backstop: std::path::PathBuf,
}

impl Local {
    fn aws_env(&self, cmd: &mut Command) {
        self.server.aws_env(cmd);
    }

    /// Runs `backstop ARGS`; its stdout.
    fn backstop(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.backstop);
        cmd.args(args).env("PG_BIN_DIR", self.pg.bin_dir());
        self.aws_env(&mut cmd);
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(format!(
                "backstop {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the AWS CLI of the dev venv; its text output.
    fn aws(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(backstop_testbed::workspace_root().join(".venv/bin/aws"));
        cmd.args(args).args(["--output", "text"]);
        self.aws_env(&mut cmd);
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(format!(
                "aws {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn sql_in(&self, db: &str, sql: &str) -> Result<String> {
        Ok(self.pg.psql(db, sql)?)
    }

    /// Ordered-content checksum of every table of the sample schema.
    fn fingerprint(&self) -> Result<Vec<(String, String)>> {
        ["customers", "orders", "products"]
            .iter()
            .map(|t| {
                let sum = self.sql_in(
                    "shop",
                    &format!("SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM {t} x"),
                )?;
                Ok((t.to_string(), sum))
            })
            .collect()
    }

    /// Each device of the instance, its volume and the snapshot the volume came from.
    fn volumes(&self, instance: &str) -> Result<Vec<String>> {
        let mapped = self.aws(&[
            "ec2",
            "describe-instances",
            "--instance-ids",
            instance,
            "--query",
            "Reservations[0].Instances[0].BlockDeviceMappings[].[DeviceName,Ebs.VolumeId]",
        ])?;
        let mut out = Vec::new();
        for line in mapped.lines() {
            let mut parts = line.split_whitespace();
            let (Some(device), Some(volume)) = (parts.next(), parts.next()) else {
                continue;
            };
            let snap = self.aws(&[
                "ec2",
                "describe-volumes",
                "--volume-ids",
                volume,
                "--query",
                "Volumes[0].SnapshotId",
            ])?;
            out.push(format!("{device} on {volume} (from snapshot {snap})"));
        }
        Ok(out)
    }
}

/// The SQL checks a pipeline would run after the deploy: (what, query, expected).
const CHECKS: &[(&str, &str, &str)] = &[
    ("orders are all there", "SELECT count(*) FROM orders", "4000"),
    ("no free products", "SELECT count(*) FROM products WHERE price = 0", "0"),
    (
        "order notes readable",
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'note'",
        "1",
    ),
    (
        "customer totals view works",
        "SELECT count(*) FROM information_schema.views WHERE table_name = 'customer_totals'",
        "1",
    ),
];

/// Runs the checks against `db`, printing each; how many failed.
fn run_checks(local: &Local, db: &str) -> Result<usize> {
    let mut failed = 0;
    for (what, query, expected) in CHECKS {
        let got = local.sql_in(db, query)?;
        let ok = got == *expected;
        if !ok {
            failed += 1;
        }
        println!(
            "   {} {what}: expected {expected}, got {got}",
            if ok { "PASS" } else { "FAIL" }
        );
    }
    Ok(failed)
}

fn run() -> Result<()> {
    let backstop = project_binary("backstop", "demo")?;
    let backstop_local = project_binary("backstop-local", "demo")?;
    println!("Backstop demo: a protected deploy of the `shop` application, v1.4.2 -> v1.5.0.");

    let phase = Phase::start(
        "Local default: moto (S3, EC2, Step Functions running the real ASL) and PostgreSQL",
    );
    let pg = PgCluster::start()?;
    pg.create_db("shop")?;
    pg.psql_script("shop", SHOP)?;
    let migration = std::env::temp_dir().join(format!("backstop-demo-{}.sql", std::process::id()));
    std::fs::write(&migration, MIGRATION)?;
    // The deploy: v1.5.0's migration runs, then the deploy step fails.
    let deploy = format!(
        "cat >/dev/null; {}/psql -q -v ON_ERROR_STOP=1 \"$SHOP_DB_URL\" -f {} >/dev/null && \
         echo 'v1.5.0 migration 0042 failed after dropping orders.note' >&2; exit 1",
        pg.bin_dir().display(),
        migration.display()
    );
    let server = LocalServer::start(
        Command::new(&backstop_local)
            .args(["--bucket", "shop-backups", "--function"])
            .arg(format!("shop-deploy={deploy}"))
            .env("SHOP_DB_URL", pg.url("shop"))
            .env("PG_BIN_DIR", pg.bin_dir()),
    )?;
    let local = Local {
        server,
        pg,
        backstop,
    };
    let instance = local.aws(&[
        "ec2",
        "run-instances",
        "--image-id",
        "ami-03cf127a",
        "--instance-type",
        "t3.micro",
        "--block-device-mappings",
        r#"[{"DeviceName":"/dev/sda1","Ebs":{"VolumeSize":8}},{"DeviceName":"/dev/sdf","Ebs":{"VolumeSize":50}}]"#,
        "--query",
        "Instances[0].InstanceId",
    ])?;
    println!(
        "   moto at {} (state machine backstop-protect)",
        local.server.endpoint
    );
    println!(
        "   PostgreSQL `shop` on 127.0.0.1:{}: 500 customers, 200 products, 4000 orders",
        local.pg.port
    );
    println!("   EC2 instance {instance} (the app server): root /dev/sda1, data /dev/sdf");
    let original = local.volumes(&instance)?;
    phase.done();
    let before = local.fingerprint()?;

    let phase = Phase::start("The protected deploy (backstop run), state by state");
    let checks: Vec<Value> = CHECKS
        .iter()
        .map(|(_, q, e)| json!({"query": q, "expect": e}))
        .collect();
    let doc = json!({
        "application": "shop",
        "version": {"commit": "v1.5.0"},
        "targets": [
            {"type": "database", "url_env": "SHOP_DB_URL"},
            {"type": "instance", "instance_id": instance}
        ],
        "deploy": {"type": "lambda", "function_name": "shop-deploy"},
        "checks": {"sql": checks},
        "policy": {"first_wait_seconds": 1, "max_wait_seconds": 5}
    });
    let run_file =
        std::env::temp_dir().join(format!("backstop-demo-run-{}.json", std::process::id()));
    std::fs::write(&run_file, serde_json::to_string_pretty(&doc)?)?;
    let mut cmd = Command::new(&local.backstop);
    cmd.args([
        "run",
        "--json",
        "--state-machine-arn",
        &local.server.state_machine_arn,
        "--input",
    ])
    .arg(&run_file);
    local.aws_env(&mut cmd);
    let out = cmd.output()?;
    let _ = std::fs::remove_file(&run_file);
    let _ = std::fs::remove_file(&migration);
    let outcome: Value = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .next()
        .ok_or("backstop run printed nothing")??;
    for s in outcome["states"].as_array().into_iter().flatten() {
        println!(
            "   {:<20} {:>6.2} s",
            s[0].as_str().unwrap_or("?"),
            s[1].as_f64().unwrap_or(0.0)
        );
    }
    let id = outcome["name"].as_str().unwrap_or_default().to_string();
    println!(
        "   execution {id}: {} with {}",
        outcome["status"], outcome["error"]
    );
    phase.done();
    if outcome["error"] != "DeployFailed" {
        return Err(format!("expected DeployFailed: {outcome}").into());
    }
    let cause: Value = serde_json::from_str(outcome["cause"].as_str().unwrap_or("{}"))?;

    let phase = Phase::start("What was backed up before the deploy");
    let shown = local.backstop(&[
        "backups",
        "show",
        "--bucket",
        "shop-backups",
        "--backup-id",
        &id,
    ])?;
    for line in shown
        .lines()
        .filter(|l| !l.trim_start().starts_with("table"))
    {
        println!("   {line}");
    }
    phase.done();

    let phase = Phase::start("What the deploy did, and how it failed");
    for line in MIGRATION
        .lines()
        .filter(|l| !l.starts_with("--") && !l.is_empty())
    {
        println!("   {line}");
    }
    println!(
        "   then: {}: {}",
        cause["error"].as_str().unwrap_or(""),
        cause["cause"].as_str().unwrap_or("")
    );
    let kept = local.sql_in(
        "postgres",
        "SELECT datname FROM pg_database WHERE datname LIKE 'shop_failed_%' ORDER BY 1 DESC LIMIT 1",
    )?;
    println!("   the checks, run against the broken state (kept as database {kept}):");
    let broken = run_checks(&local, &kept)?;
    phase.done();

    let phase = Phase::start("What was restored");
    for r in cause["restored"].as_array().into_iter().flatten() {
        println!("   {}", r.as_str().unwrap_or(""));
    }
    println!(
        "   checks after the restore: {}",
        cause["checks_after_restore"].as_str().unwrap_or("")
    );
    phase.done();

    let phase = Phase::start("Proof that the data and the volumes are back");
    let failed = run_checks(&local, "shop")?;
    let after = local.fingerprint()?;
    for ((table, was), (_, now)) in before.iter().zip(&after) {
        println!(
            "   {table}: content checksum before deploy {was}, after restore {now} {}",
            if was == now {
                "(identical)"
            } else {
                "(DIFFERENT)"
            }
        );
    }
    println!("   instance {instance} before the deploy:");
    for v in &original {
        println!("     {v}");
    }
    println!("   after the restore (each from the backup's snapshot; the old volumes are kept):");
    for v in local.volumes(&instance)? {
        println!("     {v}");
    }
    phase.done();

    let phase = Phase::start("The incident report (backstop incidents show), first lines");
    let report = local.backstop(&[
        "incidents",
        "show",
        "--bucket",
        "shop-backups",
        "--backup-id",
        &id,
    ])?;
    for line in report.lines().take_while(|l| !l.starts_with("## Timeline")) {
        println!("   {line}");
    }
    println!("   (and the timeline of every state; JSON beside it: incident.json)");
    phase.done();
    if broken == 0 || failed > 0 || before != after {
        return Err("the restored data differs from the pre-deploy data".into());
    }
    println!(
        "\nThe deploy broke `shop`; Backstop put the database and the instance back, kept the \
         broken state, and failed the run with DeployFailed."
    );
    Ok(())
}
