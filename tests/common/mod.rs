//! Shared set-up for the CLI integration tests: a moto server, a throwaway PostgreSQL cluster,
//! a bucket, and helpers to run `backstop` against them and to look at S3 and tables directly.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_sdk_s3::config::{Credentials, Region};
use backstop_testbed::{Moto, PgCluster};

pub struct Bed {
    pub moto: Moto,
    pub pg: PgCluster,
    pub bucket: String,
    pub rt: tokio::runtime::Runtime,
    pub s3: aws_sdk_s3::Client,
}

/// What a `backstop` run printed.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// A directory of stand-in PostgreSQL tools, removed on drop.
pub struct FakeTools(pub PathBuf);

impl Drop for FakeTools {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Run {
    pub fn of(mut cmd: Command) -> Run {
        let out: Output = cmd.output().expect("backstop runs");
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}): {}\n{}", self.stdout, self.stderr)
        })
    }
}

impl Bed {
    pub fn start() -> Bed {
        Self::with_cluster(PgCluster::start().expect("postgres starts"))
    }

    /// A bed whose PostgreSQL accepts only TLS connections.
    pub fn start_tls_only() -> Bed {
        Self::with_cluster(PgCluster::start_tls_only().expect("postgres starts"))
    }

    fn with_cluster(pg: PgCluster) -> Bed {
        let moto = Moto::start().expect("moto starts");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let s3 = s3_client(&moto.endpoint);
        let bucket = "backstop-test".to_string();
        rt.block_on(s3.create_bucket().bucket(&bucket).send())
            .expect("bucket created");
        Bed {
            moto,
            pg,
            bucket,
            rt,
            s3,
        }
    }

    /// A `backstop` command set up for S3 at `endpoint` and PostgreSQL tools in `pg_bin`.
    pub fn command(&self, endpoint: &str, pg_bin: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backstop"));
        cmd.env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("PG_BIN_DIR", pg_bin)
            .env_remove("BACKSTOP_DATABASE_URL")
            .env_remove("BACKSTOP_LOG");
        cmd
    }

    /// Runs `backstop ARGS` against moto (or `endpoint`) with the cluster's tools.
    pub fn backstop_at(&self, endpoint: &str, args: &[&str]) -> Run {
        let mut cmd = self.command(endpoint, self.pg.bin_dir());
        cmd.args(args);
        Run::of(cmd)
    }

    /// A directory holding a `pg_dump` that pipes the real one into `shell_tail`, e.g.
    /// `head -c 9000000; kill -9 $$` (`--version` goes to the real one). Removed on drop.
    pub fn fake_pg_dump(&self, shell_tail: &str) -> FakeTools {
        let dir = std::env::temp_dir().join(format!(
            "backstop-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let real = self.pg.bin_dir().join("pg_dump");
        let wrapper = dir.join("pg_dump");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\ncase \"$1\" in --version) exec '{real}' \"$@\";; esac\n'{real}' \"$@\" | {shell_tail}\n",
                real = real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeTools(dir)
    }

    pub fn backstop(&self, args: &[&str]) -> Run {
        self.backstop_at(&self.moto.endpoint.clone(), args)
    }

    /// `backstop db backup` of `db`; panics unless it succeeds; returns the backup id.
    pub fn backup(&self, db: &str, extra: &[&str]) -> String {
        let url = self.pg.url(db);
        let mut args = vec![
            "db",
            "backup",
            "--database-url",
            &url,
            "--bucket",
            &self.bucket,
        ];
        args.extend_from_slice(extra);
        let run = self.backstop(&args);
        assert!(run.ok, "backup failed: {}", run.all());
        let id = run.stdout.trim().to_string();
        assert!(!id.is_empty());
        id
    }

    pub fn keys(&self) -> Vec<String> {
        let out = self
            .rt
            .block_on(self.s3.list_objects_v2().bucket(&self.bucket).send())
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        let out = self
            .rt
            .block_on(self.s3.get_object().bucket(&self.bucket).key(key).send())
            .unwrap();
        self.rt
            .block_on(out.body.collect())
            .unwrap()
            .into_bytes()
            .to_vec()
    }

    pub fn put(&self, key: &str, body: Vec<u8>) {
        self.rt
            .block_on(
                self.s3
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .body(body.into())
                    .send(),
            )
            .unwrap();
    }

    pub fn open_multipart_uploads(&self) -> usize {
        let out = self
            .rt
            .block_on(self.s3.list_multipart_uploads().bucket(&self.bucket).send())
            .unwrap();
        out.uploads().len()
    }

    /// Every manifest in the bucket, parsed.
    pub fn manifests(&self) -> Vec<serde_json::Value> {
        self.keys()
            .iter()
            .filter(|k| k.ends_with("/manifest.json"))
            .map(|k| serde_json::from_slice(&self.get(k)).unwrap())
            .collect()
    }

    /// The dump object of a backup.
    pub fn dump_key(&self, backup_id: &str) -> String {
        self.keys()
            .into_iter()
            .find(|k| k.contains(backup_id) && k.ends_with(".dump"))
            .expect("dump object exists")
    }

    /// Ordered-content checksum of every user table: `schema.table -> md5`.
    pub fn table_checksums(&self, db: &str) -> Vec<(String, String)> {
        let tables = self
            .pg
            .psql(
                db,
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
                 WHERE schemaname NOT IN ('pg_catalog','information_schema') ORDER BY 1",
            )
            .unwrap();
        tables
            .lines()
            .map(|t| {
                let sum = self
                    .pg
                    .psql(
                        db,
                        &format!(
                            "SELECT coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), 'empty') FROM {t} x"
                        ),
                    )
                    .unwrap();
                (t.to_string(), sum)
            })
            .collect()
    }

    pub fn databases(&self) -> Vec<String> {
        self.pg
            .psql("postgres", "SELECT datname FROM pg_database ORDER BY 1")
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A schema with a sequence, a view, a function, an index, foreign keys and a few thousand rows.
pub const SHOP_SCHEMA: &str = include_str!("../../examples/shop.sql");

/// What a bad deploy does: drops a column, deletes rows, replaces a view, adds a table.
pub const DESTRUCTIVE_MIGRATION: &str = include_str!("../../examples/destructive-migration.sql");

/// The Lambdas' task context with every AWS call going to a closed port, retries off (so a
/// call fails at once and touches nothing), and guard mode watching `shop-pipeline:Deploy`.
pub fn closed_port_context(rt: &tokio::runtime::Runtime) -> backstop_core::tasks::Context {
    let shared = rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url("http://127.0.0.1:1")
            .region(aws_config::Region::new("us-east-1"))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .credentials_provider(Credentials::new("x", "x", None, None, "t"))
            .load(),
    );
    let mut ctx = backstop_core::tasks::Context::new(&shared, "backups", "backstop").unwrap();
    ctx.guard = backstop_core::guard::GuardConfig::parse("shop-pipeline:Deploy").unwrap();
    ctx.state_machine_arn = Some("arn:aws:states:us-east-1:123456789012:stateMachine:p".into());
    ctx
}
