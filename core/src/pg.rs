//! The PostgreSQL side: a SQL [`Session`] (server version, exact row counts inside an exported
//! snapshot, creating, renaming and dropping databases) and [`PgTools`], which finds and runs the
//! real `pg_dump` and `pg_restore`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, Command};

use crate::dbconfig::DbTarget;
use crate::error::Error;

/// Quotes a PostgreSQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One table's exact row count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    pub schema: String,
    pub table: String,
    pub rows: i64,
}

/// A server's version as `SHOW server_version_num` gives it, e.g. 150018.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerVersion(pub u32);

impl ServerVersion {
    pub fn major(self) -> u32 {
        self.0 / 10000
    }
}

/// A SQL session on one database.
pub struct Session {
    client: tokio_postgres::Client,
    target: DbTarget,
}

impl Session {
    /// Connects; errors name the target (`user@host:port/db`) and never the password.
    pub async fn connect(target: &DbTarget) -> Result<Self, Error> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&target.host)
            .port(target.port)
            .user(&target.user)
            .dbname(&target.dbname)
            .application_name("backstop")
            .connect_timeout(std::time::Duration::from_secs(15));
        if !target.password.expose().is_empty() {
            cfg.password(target.password.expose());
        }
        let tls = crate::pgtls::plan(target.sslmode.as_deref(), target.sslrootcert.as_deref())?;
        cfg.ssl_mode(tls.mode);
        let client = match tls.connector {
            Some(connector) => open(&cfg, connector, target).await?,
            None => open(&cfg, tokio_postgres::NoTls, target).await?,
        };
        Ok(Session {
            client,
            target: target.clone(),
        })
    }

    pub fn target(&self) -> &DbTarget {
        &self.target
    }

    fn err(&self, e: &tokio_postgres::Error) -> Error {
        db_error(&self.target, e)
    }

    /// Runs statements that return no rows.
    pub async fn execute(&self, sql: &str) -> Result<(), Error> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| self.err(&e))
    }

    /// The first column of the first row, as PostgreSQL prints it (`None` for no row or NULL).
    pub async fn query_first_text(&self, sql: &str) -> Result<Option<String>, Error> {
        let messages = self
            .client
            .simple_query(sql)
            .await
            .map_err(|e| self.err(&e))?;
        for m in messages {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = m {
                return Ok(row.get(0).map(str::to_string));
            }
        }
        Ok(None)
    }

    /// Runs a query whose single row and column is text.
    pub async fn query_text(&self, sql: &str) -> Result<String, Error> {
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .map_err(|e| self.err(&e))?;
        row.try_get::<_, String>(0).map_err(|e| self.err(&e))
    }

    /// `server_version` (human) and `server_version_num`.
    pub async fn server_version(&self) -> Result<(String, ServerVersion), Error> {
        let human = self.query_text("SHOW server_version").await?;
        let num = self.query_text("SHOW server_version_num").await?;
        let num = num.trim().parse::<u32>().map_err(|_| Error::Database {
            target: self.target.to_string(),
            reason: format!("unexpected server_version_num {num:?}"),
        })?;
        Ok((human, ServerVersion(num)))
    }

    /// Opens a read-only repeatable-read transaction and exports its snapshot, so `pg_dump
    /// --snapshot` and [`Session::row_counts`] see exactly the same data. The transaction stays
    /// open until [`Session::commit`] (or the session is dropped).
    pub async fn begin_exported_snapshot(&self) -> Result<String, Error> {
        self.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        self.query_text("SELECT pg_export_snapshot()").await
    }

    pub async fn commit(&self) -> Result<(), Error> {
        self.execute("COMMIT").await
    }

    /// Exact row counts of every user table the dump carries (ordinary tables outside the
    /// system schemas that no extension owns), ordered by schema and name.
    pub async fn row_counts(&self) -> Result<Vec<TableCount>, Error> {
        let rows = self
            .client
            .query(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'r' \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                                   AND d.objid = c.oid AND d.deptype = 'e') \
                 ORDER BY 1, 2",
                &[],
            )
            .await
            .map_err(|e| self.err(&e))?;
        let mut counts = Vec::with_capacity(rows.len());
        for row in rows {
            let schema: String = row.try_get(0).map_err(|e| self.err(&e))?;
            let table: String = row.try_get(1).map_err(|e| self.err(&e))?;
            let sql = format!(
                "SELECT count(*) FROM ONLY {}.{}",
                quote_ident(&schema),
                quote_ident(&table)
            );
            let n: i64 = self
                .client
                .query_one(&sql, &[])
                .await
                .map_err(|e| self.err(&e))?
                .try_get(0)
                .map_err(|e| self.err(&e))?;
            counts.push(TableCount {
                schema,
                table,
                rows: n,
            });
        }
        Ok(counts)
    }

    /// Whether a database of this name exists on the server.
    pub async fn database_exists(&self, name: &str) -> Result<bool, Error> {
        let row = self
            .client
            .query_one(
                "SELECT count(*) FROM pg_database WHERE datname = $1",
                &[&name],
            )
            .await
            .map_err(|e| self.err(&e))?;
        let n: i64 = row.try_get(0).map_err(|e| self.err(&e))?;
        Ok(n > 0)
    }

    /// Creates an empty database shaped like `like` (owner, encoding, collation) when that
    /// exists, otherwise with the server defaults, from `template0`.
    pub async fn create_database(&self, name: &str, like: Option<&str>) -> Result<(), Error> {
        let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name));
        if let Some(like) = like {
            let row = self
                .client
                .query_opt(
                    "SELECT pg_get_userbyid(datdba)::text, pg_encoding_to_char(encoding)::text, \
                     datcollate::text, datctype::text FROM pg_database WHERE datname = $1",
                    &[&like],
                )
                .await
                .map_err(|e| self.err(&e))?;
            if let Some(row) = row {
                let get = |i: usize| row.try_get::<_, String>(i).map_err(|e| self.err(&e));
                sql.push_str(&format!(
                    " OWNER {} ENCODING '{}' LC_COLLATE '{}' LC_CTYPE '{}'",
                    quote_ident(&get(0)?),
                    get(1)?.replace('\'', "''"),
                    get(2)?.replace('\'', "''"),
                    get(3)?.replace('\'', "''"),
                ));
            }
        }
        self.execute(&sql).await
    }

    /// Drops a database, terminating its sessions first.
    pub async fn drop_database(&self, name: &str) -> Result<(), Error> {
        self.execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(name)
        ))
        .await
    }

    /// Blocks new connections to `name` and terminates the existing ones.
    pub async fn close_database(&self, name: &str) -> Result<(), Error> {
        self.execute(&format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
            quote_ident(name)
        ))
        .await?;
        self.client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .await
            .map_err(|e| self.err(&e))?;
        Ok(())
    }

    pub async fn open_database(&self, name: &str) -> Result<(), Error> {
        self.execute(&format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
            quote_ident(name)
        ))
        .await
    }

    pub async fn rename_database(&self, from: &str, to: &str) -> Result<(), Error> {
        self.execute(&format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(from),
            quote_ident(to)
        ))
        .await
    }
}

/// Connects with either TLS connector and drives the connection in the background.
async fn open<T>(
    cfg: &tokio_postgres::Config,
    tls: T,
    target: &DbTarget,
) -> Result<tokio_postgres::Client, Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = cfg.connect(tls).await.map_err(|e| db_error(target, &e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

fn db_error(target: &DbTarget, e: &tokio_postgres::Error) -> Error {
    // tokio-postgres puts the server's message in the source; show it, minus any password.
    let mut reason = e.to_string();
    if let Some(db) = e.as_db_error() {
        reason = format!("{}: {}", db.code().code(), db.message());
    } else if let Some(src) = std::error::Error::source(e) {
        reason = format!("{reason}: {src}");
    }
    Error::Database {
        target: target.to_string(),
        reason: target.password.redact(&reason),
    }
}

/// Compares counts; returns a human list of differences, empty when equal. Tables found but not
/// in `expected` count as differences unless `allow_extra`.
pub fn count_differences(
    expected: &[TableCount],
    actual: &[TableCount],
    allow_extra: bool,
) -> String {
    let want: BTreeMap<(&str, &str), i64> = expected
        .iter()
        .map(|c| ((c.schema.as_str(), c.table.as_str()), c.rows))
        .collect();
    let got: BTreeMap<(&str, &str), i64> = actual
        .iter()
        .map(|c| ((c.schema.as_str(), c.table.as_str()), c.rows))
        .collect();
    let mut diffs = Vec::new();
    for (k, w) in &want {
        match got.get(k) {
            Some(g) if g == w => {}
            Some(g) => diffs.push(format!("{}.{}: expected {w}, found {g}", k.0, k.1)),
            None => diffs.push(format!("{}.{}: missing", k.0, k.1)),
        }
    }
    for k in got
        .keys()
        .filter(|k| !allow_extra && !want.contains_key(*k))
    {
        diffs.push(format!("{}.{}: not in the backup", k.0, k.1));
    }
    diffs.join("; ")
}

/// Fails with `RowCountMismatch` (naming `database`) unless `found` matches `expected`.
pub fn check_counts(
    expected: &[TableCount],
    found: &[TableCount],
    database: &str,
    allow_extra: bool,
) -> Result<(), Error> {
    let differences = count_differences(expected, found, allow_extra);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(Error::RowCountMismatch {
            database: database.to_string(),
            differences,
        })
    }
}

/// Finds the PostgreSQL client tools: `$PG_BIN_DIR/<tool>` when set, otherwise `PATH`.
#[derive(Clone, Debug, Default)]
pub struct PgTools {
    pub bin_dir: Option<PathBuf>,
}

impl PgTools {
    pub fn from_env() -> Self {
        PgTools {
            bin_dir: std::env::var_os("PG_BIN_DIR").map(PathBuf::from),
        }
    }

    pub fn new(bin_dir: Option<&Path>) -> Self {
        PgTools {
            bin_dir: bin_dir.map(Path::to_path_buf),
        }
    }

    /// A command for `tool` with the target's libpq environment (when it connects anywhere) and
    /// no inherited PG* settings.
    pub fn command(&self, tool: &str, target: Option<&DbTarget>) -> Command {
        let program = match &self.bin_dir {
            Some(dir) => dir.join(tool),
            None => PathBuf::from(tool),
        };
        let mut cmd = Command::new(program);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") {
                cmd.env_remove(k);
            }
        }
        if let Some(target) = target {
            cmd.envs(target.libpq_env());
        }
        cmd.kill_on_drop(true);
        cmd
    }

    /// The major and full version of a tool, from `<tool> --version`.
    pub async fn version(&self, tool: &str) -> Result<(u32, String), Error> {
        let program = match &self.bin_dir {
            Some(dir) => dir.join(tool),
            None => PathBuf::from(tool),
        };
        let out = Command::new(&program)
            .arg("--version")
            .output()
            .await
            .map_err(|e| Error::ToolMissing {
                tool: tool.to_string(),
                reason: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        let version = text
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string();
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .ok_or_else(|| Error::ToolMissing {
                tool: tool.to_string(),
                reason: format!("unexpected version output {text:?}"),
            })?;
        Ok((major, version))
    }

    /// Spawns the command with piped stdio, mapping a failure to start to `ToolMissing`. The
    /// data pipes are widened to 1 MiB: with Linux's default 64 KiB, `pg_dump` and
    /// `pg_restore` spend measurably more CPU on wake-ups.
    pub fn spawn(&self, tool: &str, mut cmd: Command) -> Result<Child, Error> {
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::ToolMissing {
                tool: tool.to_string(),
                reason: e.to_string(),
            })?;
        if let Some(stdin) = &child.stdin {
            widen_pipe(stdin);
        }
        if let Some(stdout) = &child.stdout {
            widen_pipe(stdout);
        }
        Ok(child)
    }
}

/// A libpq connection string naming only a database, for tools' `--dbname`, so a name with
/// `=` or spaces cannot be misread.
pub fn conninfo_dbname(name: &str) -> String {
    format!(
        "dbname='{}'",
        name.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// Asks for a 1 MiB pipe buffer (the unprivileged maximum by default); a refusal only costs
/// speed, so it is ignored.
fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: F_SETPIPE_SZ on a pipe descriptor we own; fcntl reads no memory of ours.
    let _ = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
}

/// Collects the last 8 KiB of a tool's stderr, for error messages.
pub async fn stderr_tail(stderr: Option<ChildStderr>) -> String {
    let Some(mut stderr) = stderr else {
        return String::new();
    };
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 8192 {
                    tail.drain(..tail.len() - 8192);
                }
            }
        }
    }
    String::from_utf8_lossy(&tail).trim().to_string()
}

/// Describes how a tool ended, for error messages.
pub fn describe_exit(status: std::process::ExitStatus, stderr: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended abnormally".to_string(),
    };
    if stderr.is_empty() {
        how
    } else {
        format!("{how}: {stderr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_diffs() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        let a = vec![TableCount {
            schema: "public".into(),
            table: "t".into(),
            rows: 3,
        }];
        let mut b = a.clone();
        assert_eq!(count_differences(&a, &b, false), "");
        b[0].rows = 2;
        assert_eq!(
            count_differences(&a, &b, false),
            "public.t: expected 3, found 2"
        );
        assert_eq!(count_differences(&a, &[], false), "public.t: missing");
        let extra = vec![
            a[0].clone(),
            TableCount {
                schema: "public".into(),
                table: "new".into(),
                rows: 1,
            },
        ];
        assert_eq!(
            count_differences(&a, &extra, false),
            "public.new: not in the backup"
        );
        assert_eq!(count_differences(&a, &extra, true), "");
    }
}
