//! `make demo`: one protected deploy of a sample application on the local default (moto server
//! for S3, a throwaway PostgreSQL cluster), told as a short story: what was backed up, what the
//! deploy broke, what the checks saw, what was restored, and the proof that the data is back,
//! with each phase's duration. It drives the real `backstop` binary, as an operator would.

use std::process::Command;
use std::time::Instant;

use backstop_testbed::{Moto, PgCluster};

const SHOP: &str = include_str!("shop.sql");
const MIGRATION: &str = include_str!("destructive-migration.sql");

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

struct Local {
    moto: Moto,
    pg: PgCluster,
    backstop: std::path::PathBuf,
}

impl Local {
    /// Runs `backstop ARGS` with the database URL in the environment, never in argv.
    fn backstop(&self, args: &[&str], db: Option<&str>) -> Result<String> {
        let mut cmd = Command::new(&self.backstop);
        cmd.args(args)
            .env("AWS_ENDPOINT_URL", &self.moto.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "demo")
            .env("AWS_SECRET_ACCESS_KEY", "demo")
            .env("PG_BIN_DIR", self.pg.bin_dir());
        if let Some(db) = db {
            cmd.env("BACKSTOP_DATABASE_URL", self.pg.url(db));
        }
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

    fn sql(&self, sql: &str) -> Result<String> {
        Ok(self.pg.psql("shop", sql)?)
    }

    /// Ordered-content checksum of every table of the sample schema.
    fn fingerprint(&self) -> Result<Vec<(String, String)>> {
        ["customers", "orders", "products"]
            .iter()
            .map(|t| {
                let sum = self.sql(&format!(
                    "SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM {t} x"
                ))?;
                Ok((t.to_string(), sum))
            })
            .collect()
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

fn run_checks(local: &Local) -> Result<usize> {
    let mut failed = 0;
    for (what, query, expected) in CHECKS {
        let got = local.sql(query)?;
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
    let exe = std::env::current_exe()?;
    let backstop = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("backstop"))
        .ok_or("cannot locate the backstop binary")?;
    if !backstop.exists() {
        return Err(format!("{} is not built (run `make demo`)", backstop.display()).into());
    }
    println!("Backstop demo: a protected deploy of the `shop` application.");

    let phase = Phase::start("Local default: moto server (S3) and a throwaway PostgreSQL cluster");
    let moto = Moto::start()?;
    let pg = PgCluster::start()?;
    let local = Local { moto, pg, backstop };
    println!(
        "   S3 at {}, PostgreSQL on 127.0.0.1:{}",
        local.moto.endpoint, local.pg.port
    );
    local.pg.create_db("shop")?;
    local.pg.psql_script("shop", SHOP)?;
    let s3 = Command::new(backstop_testbed::workspace_root().join(".venv/bin/aws"))
        .args([
            "--endpoint-url",
            &local.moto.endpoint,
            "s3",
            "mb",
            "s3://shop-backups",
        ])
        .env("AWS_ACCESS_KEY_ID", "demo")
        .env("AWS_SECRET_ACCESS_KEY", "demo")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()?;
    if !s3.status.success() {
        return Err(format!(
            "creating the bucket: {}",
            String::from_utf8_lossy(&s3.stderr)
        )
        .into());
    }
    println!("   sample database `shop`: 500 customers, 200 products, 4000 orders");
    phase.done();
    let before = local.fingerprint()?;

    let phase = Phase::start("Backup before deploying v1.5.0 (pg_dump streamed into S3)");
    let id = local
        .backstop(
            &[
                "db",
                "backup",
                "--bucket",
                "shop-backups",
                "--application",
                "shop",
                "--app-version",
                "v1.4.2",
            ],
            Some("shop"),
        )?
        .trim()
        .to_string();
    let shown = local.backstop(
        &[
            "backups",
            "show",
            "--bucket",
            "shop-backups",
            "--backup-id",
            &id,
        ],
        None,
    )?;
    for line in shown.lines() {
        println!("   {line}");
    }
    phase.done();

    let phase = Phase::start("Prove the backup: checksum re-read, archive listing, restore test");
    let verified = local.backstop(
        &[
            "db",
            "verify",
            "--bucket",
            "shop-backups",
            "--backup-id",
            &id,
            "--restore-test",
        ],
        Some("postgres"),
    )?;
    print!("   {verified}");
    phase.done();

    let phase = Phase::start("Deploy v1.5.0: its migration is destructive");
    for line in MIGRATION
        .lines()
        .filter(|l| !l.starts_with("--") && !l.is_empty())
    {
        println!("   {line}");
    }
    local.pg.psql_script("shop", MIGRATION)?;
    phase.done();

    let phase = Phase::start("Post-deploy checks");
    let failed = run_checks(&local)?;
    println!(
        "   {failed} of {} checks failed: the deploy is rolled back",
        CHECKS.len()
    );
    phase.done();
    if failed == 0 {
        return Err("the destructive migration should have failed the checks".into());
    }

    let phase = Phase::start("Restore (swap: restore into a new database, keep the broken one)");
    let restored = local.backstop(
        &[
            "db",
            "restore",
            "--bucket",
            "shop-backups",
            "--backup-id",
            &id,
        ],
        Some("shop"),
    )?;
    for line in restored.lines() {
        println!("   {line}");
    }
    phase.done();

    let phase = Phase::start("Proof that the data is back");
    let failed = run_checks(&local)?;
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
    phase.done();
    if failed > 0 || before != after {
        return Err("the restored data differs from the pre-deploy data".into());
    }
    println!("\nThe deploy failed its checks and `shop` is back to its pre-deploy state; the broken state is kept for forensics.");
    Ok(())
}
