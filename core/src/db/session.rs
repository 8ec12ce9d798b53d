//! A SQL [`Session`] on one database: server version, exact row counts inside an exported
//! snapshot, creating, renaming, closing and dropping databases.

use crate::db::target::DbTarget;
use crate::error::Error;
use crate::model::manifest::{DatabaseProperties, TableCount};

/// Quotes a PostgreSQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a PostgreSQL string literal; one holding a backslash is an escape string (`E'…'`),
/// so it means the same whatever `standard_conforming_strings` says.
pub fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// A server's version as `SHOW server_version_num` gives it, e.g. 150018.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerVersion(pub u32);

impl ServerVersion {
    pub fn major(self) -> u32 {
        self.0 / 10000
    }
}

/// The longest any one of Backstop's own statements may run (a row count of a very large
/// table is the longest); the operation's own deadline usually ends it sooner.
pub const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// The longest Backstop's own statements wait for a lock another session holds.
pub const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A SQL session on one database, with Backstop's own [`STATEMENT_TIMEOUT`] and
/// [`LOCK_TIMEOUT`], and no idle-in-transaction timeout whatever the database sets.
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
        let tls = crate::db::tls::plan(target.sslmode.as_deref(), target.sslrootcert.as_deref())?;
        cfg.ssl_mode(tls.mode);
        let client = match tls.connector {
            Some(connector) => open(&cfg, connector, target).await?,
            None => open(&cfg, tokio_postgres::NoTls, target).await?,
        };
        // Backstop's own statements have their own bounds, whatever the database sets for its
        // application: none waits on a lock for long or runs for hours, and the snapshot
        // transaction of a backup may sit idle while pg_dump works.
        client
            .batch_execute(&format!(
                "SET statement_timeout = {}; SET lock_timeout = {}; \
                 SET idle_in_transaction_session_timeout = 0",
                STATEMENT_TIMEOUT.as_millis(),
                LOCK_TIMEOUT.as_millis()
            ))
            .await
            .map_err(|e| db_error(target, &e))?;
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

    /// The connection, for the modules of this folder that need more than these methods.
    pub(crate) fn client(&self) -> &tokio_postgres::Client {
        &self.client
    }

    /// An error of this session as [`Error::Database`], naming the target.
    pub(crate) fn error(&self, e: &tokio_postgres::Error) -> Error {
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

    /// A check's query, run so that it can change nothing and say nothing it should not: one
    /// statement (the server refuses several in a prepared statement), which must return
    /// columns, inside a read-only transaction with `statement_timeout` that is rolled back
    /// afterwards. Returns the first column of the first row as PostgreSQL prints it. A
    /// failure names only the SQLSTATE, never the server's message, which can quote data.
    pub async fn read_only_value(
        &self,
        sql: &str,
        timeout: std::time::Duration,
    ) -> Result<Option<String>, QueryRefused> {
        let refused = |e: tokio_postgres::Error| match e.as_db_error() {
            Some(db) => QueryRefused::Server(db.code().code().to_string()),
            None => QueryRefused::Connection,
        };
        // A statement before the check's query fixes the transaction as read-only: `SET
        // TRANSACTION READ WRITE` is refused after the first query of a transaction.
        self.client
            .batch_execute(&format!(
                "BEGIN READ ONLY; SET LOCAL statement_timeout = {}; SELECT 1",
                timeout.as_millis().max(1)
            ))
            .await
            .map_err(refused)?;
        let outcome = async {
            let prepared = self.client.prepare(sql).await.map_err(refused)?;
            if prepared.columns().is_empty() {
                return Err(QueryRefused::NoColumns);
            }
            let messages = self.client.simple_query(sql).await.map_err(refused)?;
            Ok(messages.into_iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some(row.get(0).map(str::to_string))
                }
                _ => None,
            }))
        }
        .await;
        // Undoes what a read-only transaction still allows (a large object, say).
        let _ = self.client.batch_execute("ROLLBACK").await;
        Ok(outcome?.flatten())
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

    /// Creates an empty database from `template0`, with the owner, encoding and locale of
    /// `like` when given, otherwise the server's defaults.
    pub async fn create_database(
        &self,
        name: &str,
        like: Option<&DatabaseProperties>,
    ) -> Result<(), Error> {
        let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name));
        if let Some(like) = like {
            sql.push_str(&format!(
                " OWNER {} ENCODING {} LC_COLLATE {} LC_CTYPE {}",
                quote_ident(&like.owner),
                quote_literal(&like.encoding),
                quote_literal(&like.collate),
                quote_literal(&like.ctype),
            ));
        }
        self.execute(&sql).await
    }

    /// Sets (or, with `None`, removes) the database's comment.
    pub async fn set_comment(&self, name: &str, comment: Option<&str>) -> Result<(), Error> {
        self.execute(&format!(
            "COMMENT ON DATABASE {} IS {}",
            quote_ident(name),
            comment.map_or("NULL".to_string(), quote_literal)
        ))
        .await
    }

    /// Marks a database Backstop made or kept as `kind`, in its comment ([`Marker`]), with a
    /// note for whoever finds it.
    pub async fn mark_database(&self, name: &str, kind: Marker, note: &str) -> Result<(), Error> {
        self.set_comment(name, Some(&format!("{} {note}", kind.text())))
            .await
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

/// What Backstop writes at the start of the comment of a database it made or kept, so that
/// prune drops only databases carrying it, never one that merely has a name like them.
/// (A comment, because the owner may always write one; a custom setting would need a
/// superuser since PostgreSQL 15.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// The state a swap restore moved aside.
    FailedState,
    /// The database a swap restore fills before the swap.
    RestoreScratch,
    /// The database a restore test (verify, the drill) fills and drops.
    VerifyScratch,
}

impl Marker {
    pub fn text(self) -> &'static str {
        match self {
            Marker::FailedState => "backstop:failed-state",
            Marker::RestoreScratch => "backstop:restore-scratch",
            Marker::VerifyScratch => "backstop:verify-scratch",
        }
    }

    /// Whether a database's comment carries this marker.
    pub fn on(self, comment: &str) -> bool {
        comment
            .strip_prefix(self.text())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
    }
}

/// Why a check's query gave no value; says nothing of the data.
#[derive(Debug, PartialEq, Eq)]
pub enum QueryRefused {
    /// The server refused or failed it, with this SQLSTATE.
    Server(String),
    /// It is not a query: it returns no columns.
    NoColumns,
    /// The connection failed.
    Connection,
}

impl std::fmt::Display for QueryRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryRefused::Server(code) => write!(
                f,
                "the server refused it with SQLSTATE {code}{}",
                match code.as_str() {
                    "42601" => " (a syntax error, or more than one statement)",
                    "25006" => " (it writes, and checks run read-only)",
                    "57014" => " (statement_timeout)",
                    "42501" => " (permission denied)",
                    _ => "",
                }
            ),
            QueryRefused::NoColumns => f.write_str("it returns no columns (a check is a query)"),
            QueryRefused::Connection => f.write_str("the connection failed while it ran"),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
    }
}
