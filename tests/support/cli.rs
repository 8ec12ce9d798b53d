//! `backstop` runs against a bed: the environment set up for its endpoint, region,
//! credentials and PostgreSQL tools, what a run printed, and helpers for the calls tests
//! repeat (a command in the bed's catalog, `db backup`, `backups show`, `run` of a document).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use backstop_testbed::PgCluster;
use serde_json::Value;

use super::fixtures::TempFile;
use super::{ACCESS_KEY, REGION, SECRET_KEY};

/// What a `backstop` run printed.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
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

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}): {}\n{}", self.stdout, self.stderr)
        })
    }

    /// The first JSON value on stdout (a failed `run --json` prints its outcome, then the error).
    pub fn first_json(&self) -> Value {
        serde_json::Deserializer::from_str(&self.stdout)
            .into_iter::<Value>()
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("no JSON: {}", self.all()))
    }
}

/// `backstop` set up for one bed.
#[derive(Clone)]
pub struct Cli {
    endpoint: String,
    bucket: String,
    pg_bin: Option<PathBuf>,
    /// `postgres://user:password@127.0.0.1:port/`, the cluster's URL without a database.
    pg_url: Option<String>,
    envs: Vec<(String, String)>,
}

impl Cli {
    pub(crate) fn new(endpoint: &str, bucket: &str) -> Cli {
        Cli {
            endpoint: endpoint.to_string(),
            bucket: bucket.to_string(),
            pg_bin: None,
            pg_url: None,
            envs: Vec::new(),
        }
    }

    /// With the cluster's tools and logins.
    pub(crate) fn pg(mut self, pg: &PgCluster) -> Cli {
        self.pg_bin = Some(pg.bin_dir().to_path_buf());
        self.pg_url = Some(pg.url(""));
        self
    }

    /// AWS at `endpoint` instead (a fault proxy).
    pub fn at(mut self, endpoint: &str) -> Cli {
        self.endpoint = endpoint.to_string();
        self
    }

    /// Logs in to the cluster as `user` with `password` instead of its superuser.
    pub fn login_as(mut self, port: u16, user: &str, password: &str) -> Cli {
        self.pg_url = Some(format!("postgres://{user}:{password}@127.0.0.1:{port}/"));
        self
    }

    /// The PostgreSQL tools in `dir` instead (stand-ins).
    pub fn tools(mut self, dir: &Path) -> Cli {
        self.pg_bin = Some(dir.to_path_buf());
        self
    }

    pub fn with_env(mut self, key: &str, value: &str) -> Cli {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Logging at debug level (`BACKSTOP_LOG=debug`).
    pub fn verbose(self) -> Cli {
        self.with_env("BACKSTOP_LOG", "debug")
    }

    /// The cluster's URL of `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "{}{db}",
            self.pg_url.as_deref().expect("the bed has no PostgreSQL")
        )
    }

    /// The environment a run gets: AWS at the bed's endpoint, the PostgreSQL tools, and
    /// what was added with [`Cli::with_env`].
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(dir) = &self.pg_bin {
            env.push(("PG_BIN_DIR".to_string(), dir.display().to_string()));
        }
        env.extend(self.envs.iter().cloned());
        env
    }

    /// `backstop ARGS` as a command, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backstop"));
        cmd.args(args);
        // What the test's own environment may hold must not reach the run.
        for var in [
            "BACKSTOP_DATABASE_URL",
            "BACKSTOP_STATE_MACHINE_ARN",
            "BACKSTOP_LOG",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(self.environment());
        cmd
    }

    /// `backstop ARGS`.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::of(self.command(args))
    }

    /// `backstop ARGS --bucket <the bed's bucket>`: a command on the bed's catalog.
    pub fn catalog(&self, args: &[&str]) -> Run {
        self.run(&self.in_catalog(args))
    }

    /// `backstop ARGS --bucket … --json`, which must succeed; its JSON.
    pub fn catalog_json(&self, args: &[&str]) -> Value {
        let mut all = self.in_catalog(args);
        all.push("--json");
        let run = self.run(&all);
        assert!(run.ok, "backstop {args:?} failed: {}", run.all());
        run.json()
    }

    /// `backstop ARGS --bucket … --json`, which must fail; the error type it names.
    pub fn catalog_error(&self, args: &[&str]) -> String {
        let mut all = self.in_catalog(args);
        all.push("--json");
        let run = self.run(&all);
        assert!(!run.ok, "backstop {args:?} should fail: {}", run.all());
        run.json()["error"]["type"]
            .as_str()
            .unwrap_or_else(|| panic!("no error type in: {}", run.all()))
            .to_string()
    }

    /// `args` with the bed's bucket appended.
    pub fn in_catalog<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend(["--bucket", self.bucket.as_str()]);
        all
    }

    /// `backstop db backup` of the cluster's `db` (with `extra` arguments), which must
    /// succeed; the backup id it printed.
    pub fn db_backup(&self, db: &str, extra: &[&str]) -> String {
        let url = self.url(db);
        let mut args = vec!["db", "backup", "--database-url", &url];
        args.extend_from_slice(extra);
        let run = self.catalog(&args);
        assert!(run.ok, "backup failed: {}", run.all());
        let id = run.stdout.trim().to_string();
        assert!(!id.is_empty());
        id
    }

    /// `backstop db restore` of backup `id` into the cluster's `db` (with `extra` arguments).
    pub fn db_restore(&self, id: &str, db: &str, extra: &[&str]) -> Run {
        let url = self.url(db);
        let mut args = vec!["db", "restore", "--backup-id", id, "--database-url", &url];
        args.extend_from_slice(extra);
        self.catalog(&args)
    }

    /// `backstop db verify` of backup `id` (with `extra` arguments).
    pub fn db_verify(&self, id: &str, extra: &[&str]) -> Run {
        let mut args = vec!["db", "verify", "--backup-id", id];
        args.extend_from_slice(extra);
        self.catalog(&args)
    }

    /// `backstop backups show --json` of backup `id`, which must succeed.
    pub fn backups_show(&self, id: &str) -> Value {
        self.catalog_json(&["backups", "show", "--backup-id", id])
    }

    /// `backstop run --json` of the run document `doc`: the run and the outcome JSON (the
    /// first value on stdout; a failed run prints the error object after it).
    pub fn run_document(&self, doc: &Value) -> (Run, Value) {
        let input = TempFile::with("run.json", &doc.to_string());
        let run = self.run(&["run", "--json", "--input", &input.path()]);
        let outcome = run.first_json();
        (run, outcome)
    }
}
