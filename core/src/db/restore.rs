//! Restore of one database from the catalog. The dump streams from S3 (ranged GETs, bounded
//! prefetch, SHA-256 checked on the way) straight into the real `pg_restore`.
//!
//! - **swap** (default): restore into a new database, check its row counts against the
//!   manifest, then close the target, rename it `<db>_failed_<timestamp>` (kept for forensics)
//!   and rename the new database to the target's name. Any failure before the swap drops the
//!   new database and leaves the target exactly as it was.
//! - **in-place**: first a forensic dump of the current state into the catalog (unless turned
//!   off), then `pg_restore --clean --if-exists --single-transaction`: all or nothing. A corrupt
//!   object is detected before `pg_restore` sees its end, so it never commits.
//!
//! In both modes the database object's own properties recorded at backup (owner, connection
//! limit, comment, privileges, settings) are put back afterwards ([`properties::apply`]); in a
//! swap before the swap, so a failure leaves the target untouched. What the server refuses to
//! the owner (a superuser-only setting, say) is reported, not fatal.
//!
//! Version policy: a backup taken from a newer PostgreSQL major version than the target server
//! runs is refused (`IncompatibleServerVersion`) before anything is touched.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use crate::catalog::Catalog;
use crate::db::backup::{backup_database, run_bounded, BackupRequest, Compression, Stored};
use crate::db::properties;
use crate::db::session::{Marker, Session};
use crate::db::target::{DbTarget, Password};
use crate::db::tools::{conninfo_dbname, describe_exit, stderr_tail, PgTools};
use crate::error::Error;
use crate::model::manifest::{
    check_counts, BackupState, DatabaseBackup, Manifest, Purpose, TableCount,
};
use crate::progress::{Progress, Quiet};
use crate::store::download::{stream_verified, DownloadTuning, Streamed};
use crate::store::ObjectStore;

/// How to restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestoreMode {
    Swap,
    InPlace,
}

impl std::str::FromStr for RestoreMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "swap" => Ok(RestoreMode::Swap),
            "in-place" => Ok(RestoreMode::InPlace),
            other => Err(Error::InvalidInput(format!(
                "restore mode {other:?}: use swap or in-place"
            ))),
        }
    }
}

/// What to restore and how.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub backup_id: String,
    /// The application whose backup it is; when `None` the id is looked up in every
    /// application and must be found in exactly one.
    pub application: Option<String>,
    pub mode: RestoreMode,
    /// Which database of the backup, when it holds several.
    pub database: Option<String>,
    /// The server (`host:port`) the database was backed up from, when the backup holds
    /// databases of that name on several servers.
    pub server: Option<String>,
    /// In-place only: dump the current state into the catalog first.
    pub forensic_dump: bool,
    pub timeout: Option<Duration>,
    pub tuning: DownloadTuning,
}

impl RestoreRequest {
    pub fn new(backup_id: impl Into<String>, mode: RestoreMode) -> Self {
        RestoreRequest {
            backup_id: backup_id.into(),
            application: None,
            mode,
            database: None,
            server: None,
            forensic_dump: true,
            timeout: None,
            tuning: DownloadTuning::default(),
        }
    }
}

/// What a restore did.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    pub backup_id: String,
    pub mode: RestoreMode,
    /// The database now holding the restored data (the target's name).
    pub database: String,
    /// Swap: the database holding the state found before the restore.
    pub failed_state_database: Option<String>,
    /// In-place: the backup id of the forensic dump of the state found before the restore.
    pub forensic_backup_id: Option<String>,
    pub bytes: u64,
    pub tables: Vec<TableCount>,
    /// Tables present after an in-place restore that the backup does not have (created by the
    /// failed deploy; in-place restore does not drop what the archive does not name).
    pub tables_not_in_backup: Vec<String>,
    /// The database's own properties (owner, settings, privileges, …) that could not be put
    /// back, each with the server's reason; the data is restored all the same.
    pub properties_not_restored: Vec<String>,
    pub seconds: f64,
}

/// Restores one database of a backup into `target`.
pub async fn restore_database(
    catalog: &Catalog,
    tools: &PgTools,
    target: &DbTarget,
    req: &RestoreRequest,
    progress: &dyn Progress,
    cancel: impl Future<Output = ()>,
) -> Result<RestoreReport, Error> {
    let started = Instant::now();
    let manifest = match &req.application {
        Some(app) => catalog.manifest(app, &req.backup_id).await?,
        None => catalog.find(&req.backup_id).await?,
    };
    let entry = usable_database(&manifest, req.server.as_deref(), req.database.as_deref())?;
    let maint = Session::connect(&maintenance_target(target)).await?;
    let (_, target_version) = maint.server_version().await?;
    let backup_major = entry.server_version_num / 10000;
    if backup_major > target_version.major() {
        return Err(Error::IncompatibleServerVersion {
            backup_major,
            target_major: target_version.major(),
        });
    }
    let mut report = RestoreReport {
        backup_id: manifest.backup_id.clone(),
        mode: req.mode,
        database: target.dbname.clone(),
        failed_state_database: None,
        forensic_backup_id: None,
        bytes: entry.artifact.bytes,
        tables: Vec::new(),
        tables_not_in_backup: Vec::new(),
        properties_not_restored: Vec::new(),
        seconds: 0.0,
    };
    match req.mode {
        RestoreMode::Swap => {
            let swapped =
                restore_swap(catalog, tools, &maint, target, entry, req, progress, cancel).await?;
            report.tables = swapped.tables;
            report.failed_state_database = swapped.failed_state;
            report.properties_not_restored = swapped.properties_not_restored;
        }
        RestoreMode::InPlace => {
            if req.forensic_dump {
                let mut forensic = BackupRequest::new(manifest.application.clone());
                forensic.purpose = Purpose::Forensic {
                    restore_of: manifest.backup_id.clone(),
                };
                forensic.compression = Compression::Auto;
                let done = backup_database(
                    catalog,
                    tools,
                    target,
                    &forensic,
                    &Quiet,
                    std::future::pending(),
                )
                .await?;
                report.forensic_backup_id = Some(done.backup_id);
            }
            progress.start(
                &format!("restore {}", target.dbname),
                Some(entry.artifact.bytes),
            );
            let args = [
                "--clean",
                "--if-exists",
                "--single-transaction",
                "--exit-on-error",
            ];
            let work = restore_archive(
                catalog.store.as_ref(),
                tools,
                target,
                entry,
                &args,
                req.tuning,
                progress,
            );
            run_bounded("restore", req.timeout, cancel, work).await?;
            progress.finish();
            let session = Session::connect(target).await?;
            let found = session.row_counts().await?;
            check_counts(&entry.tables, &found, &target.dbname, true)?;
            drop(session);
            if let Some(props) = &entry.properties {
                report.properties_not_restored =
                    properties::apply(&maint, &target.dbname, &target.dbname, props)
                        .await
                        .map_err(|e| {
                            Error::RestoreIncomplete(format!(
                                "the data of {} is restored, but its own properties (owner, settings, privileges) were not put back: {e}",
                                target.dbname
                            ))
                        })?;
            }
            report.tables_not_in_backup = found
                .iter()
                .filter(|f| {
                    !entry
                        .tables
                        .iter()
                        .any(|t| t.schema == f.schema && t.table == f.table)
                })
                .map(|f| format!("{}.{}", f.schema, f.table))
                .collect();
            report.tables = found;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        backup_id = report.backup_id,
        database = report.database,
        "restore completed"
    );
    Ok(report)
}

/// Fails with `BackupNotUsable` unless the manifest says `completed`.
pub fn ensure_completed(manifest: &Manifest) -> Result<(), Error> {
    if manifest.state == BackupState::Completed {
        Ok(())
    } else {
        Err(Error::BackupNotUsable {
            backup_id: manifest.backup_id.clone(),
            state: manifest.state.to_string(),
        })
    }
}

/// The manifest's entry for `database` on `server`, when the backup is usable. Without a
/// server, the only entry of that name; without a name, the only entry. A choice that
/// matches several entries is `InvalidInput` naming them, one that matches none
/// `DatabaseNotInBackup`.
pub fn usable_database<'m>(
    manifest: &'m Manifest,
    server: Option<&str>,
    database: Option<&str>,
) -> Result<&'m DatabaseBackup, Error> {
    ensure_completed(manifest)?;
    if let (Some(server), Some(database)) = (server, database) {
        return manifest.database(server, database);
    }
    let chosen: Vec<&DatabaseBackup> = manifest
        .databases
        .iter()
        .filter(|d| database.is_none_or(|n| d.database == n))
        .filter(|d| server.is_none_or(|s| d.server == s))
        .collect();
    match chosen.as_slice() {
        [only] => Ok(only),
        [] => manifest.database(server.unwrap_or("any server"), database.unwrap_or("any")),
        several => Err(Error::InvalidInput(format!(
            "backup {} holds {} databases that match ({}); name {}",
            manifest.backup_id,
            several.len(),
            several
                .iter()
                .map(|d| d.label())
                .collect::<Vec<_>>()
                .join(", "),
            if database.is_none() {
                "the database"
            } else {
                "the server too"
            }
        ))),
    }
}

/// A database on the target's server to run CREATE/ALTER/DROP DATABASE from.
pub fn maintenance_target(target: &DbTarget) -> DbTarget {
    let name = if target.dbname == "postgres" {
        "template1"
    } else {
        "postgres"
    };
    target.with_dbname(name)
}

/// A database name `<base>_<suffix>` within PostgreSQL's 63-byte limit.
pub fn derived_name(base: &str, suffix: &str) -> String {
    let mut base = base.to_string();
    while base.len() + 1 + suffix.len() > 63 {
        base.pop();
    }
    format!("{base}_{suffix}")
}

/// `YYYYMMDDHHMMSS` in UTC.
pub fn timestamp(now: OffsetDateTime) -> String {
    let t = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// What a swap did.
struct Swapped {
    tables: Vec<TableCount>,
    failed_state: Option<String>,
    properties_not_restored: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
async fn restore_swap(
    catalog: &Catalog,
    tools: &PgTools,
    maint: &Session,
    target: &DbTarget,
    entry: &DatabaseBackup,
    req: &RestoreRequest,
    progress: &dyn Progress,
    cancel: impl Future<Output = ()>,
) -> Result<Swapped, Error> {
    let ts = timestamp(OffsetDateTime::now_utc());
    let fresh = derived_name(&target.dbname, &format!("restore_{ts}"));
    let failed = derived_name(&target.dbname, &format!("failed_{ts}"));
    // The target as it is now: the new database is made like it (owner, encoding, locale).
    let found = match maint.database_exists(&target.dbname).await? {
        true => Some(properties::read(maint, &target.dbname).await?),
        false => None,
    };
    let target_exists = found.is_some();
    let own_comment = found.as_ref().and_then(|p| p.comment.clone());
    maint.create_database(&fresh, found.as_ref()).await?;
    // Marked from birth, so that a restore killed before it could drop its copy leaves one
    // prune recognises; the mark goes just before the swap.
    let marked = maint
        .mark_database(
            &fresh,
            Marker::RestoreScratch,
            &format!(
                "swap restore of backup {} into {}",
                req.backup_id, target.dbname
            ),
        )
        .await;
    if let Err(e) = marked {
        let _ = maint.drop_database(&fresh).await;
        return Err(e);
    }

    // Everything up to the swap happens in `fresh`; on any failure it is dropped.
    let into = target.with_dbname(&fresh);
    let label = format!("restore {}", target.dbname);
    let prepared = restore_and_count(
        &label,
        catalog.store.as_ref(),
        tools,
        &into,
        entry,
        &["--exit-on-error"],
        req.tuning,
        progress,
        req.timeout,
        cancel,
    );
    let shaped = async {
        let tables = prepared.await?;
        // The restored database's own comment replaces the mark: the backup's, or (for a
        // backup that did not record it) the target's current one.
        let comment = match &entry.properties {
            Some(props) => props.comment.clone(),
            None => own_comment.clone(),
        };
        maint.set_comment(&fresh, comment.as_deref()).await?;
        let not_restored = match &entry.properties {
            Some(props) => properties::apply(maint, &fresh, &target.dbname, props).await?,
            None => Vec::new(),
        };
        Ok::<_, Error>((tables, not_restored))
    };
    let (tables, properties_not_restored) = match shaped.await {
        Ok(t) => t,
        Err(e) => {
            if let Err(drop_err) = maint.drop_database(&fresh).await {
                tracing::error!(database = fresh, error = %drop_err, "could not drop the scratch restore database");
            }
            return Err(e);
        }
    };

    if !target_exists {
        maint.rename_database(&fresh, &target.dbname).await?;
        return Ok(Swapped {
            tables,
            failed_state: None,
            properties_not_restored,
        });
    }
    // The swap: close the target, move it aside, move the restored database in.
    if let Err(e) = maint.close_database(&target.dbname).await {
        let _ = maint.open_database(&target.dbname).await;
        let _ = maint.drop_database(&fresh).await;
        return Err(e);
    }
    if let Err(e) = maint.rename_database(&target.dbname, &failed).await {
        let _ = maint.open_database(&target.dbname).await;
        let _ = maint.drop_database(&fresh).await;
        return Err(e);
    }
    if let Err(e) = maint.rename_database(&fresh, &target.dbname).await {
        // Put the original back so the application has its database again.
        let back = maint.rename_database(&failed, &target.dbname).await;
        let reopened = maint.open_database(&target.dbname).await;
        let state = match (back, reopened) {
            (Ok(()), Ok(())) => format!(
                "the original database is back under {} and unchanged; the restored copy is in {fresh}",
                target.dbname
            ),
            _ => format!(
                "the original database is in {failed} (connections blocked), the restored copy in {fresh}; \
                 {} does not exist",
                target.dbname
            ),
        };
        return Err(Error::SwapIncomplete(format!("{e}; {state}")));
    }
    if let Err(e) = maint.open_database(&failed).await {
        tracing::warn!(database = failed, error = %e, "the kept failed-state database still refuses connections");
    }
    let note = format!(
        "of {} at {ts} UTC, kept by the swap restore of backup {}{}",
        target.dbname,
        req.backup_id,
        own_comment
            .map(|c| format!("; its own comment was: {c}"))
            .unwrap_or_default()
    );
    if let Err(e) = maint
        .mark_database(&failed, Marker::FailedState, &note)
        .await
    {
        // Unmarked, prune never drops it: kept, which is the safe side.
        tracing::warn!(database = failed, error = %e, "could not mark the kept failed-state database");
    }
    Ok(Swapped {
        tables,
        failed_state: Some(failed),
        properties_not_restored,
    })
}

/// Restores `entry` into the new, empty database `into` (progress under `label`) and counts
/// its rows, stopped by `timeout`, the deadline or `cancel`, then checks the counts against
/// the manifest; returns the counts found. The caller owns `into` and drops it when this
/// fails.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn restore_and_count(
    label: &str,
    store: &dyn ObjectStore,
    tools: &PgTools,
    into: &DbTarget,
    entry: &DatabaseBackup,
    args: &[&str],
    tuning: DownloadTuning,
    progress: &dyn Progress,
    timeout: Option<Duration>,
    cancel: impl Future<Output = ()>,
) -> Result<Vec<TableCount>, Error> {
    progress.start(label, Some(entry.artifact.bytes));
    // The count is part of the bounded work: on a large database it takes a while too.
    let work = async {
        restore_archive(store, tools, into, entry, args, tuning, progress).await?;
        Session::connect(into).await?.row_counts().await
    };
    let found = run_bounded("restore", timeout, cancel, work).await;
    progress.finish();
    let found = found?;
    check_counts(&entry.tables, &found, &into.dbname, false)?;
    Ok(found)
}

/// Streams the dump of `entry` into `pg_restore <args> --dbname <into>`, verifying size and
/// SHA-256 on the way; a mismatch kills `pg_restore` before it sees the archive's end. Returns
/// what passed.
pub async fn restore_archive(
    store: &dyn ObjectStore,
    tools: &PgTools,
    into: &DbTarget,
    entry: &DatabaseBackup,
    args: &[&str],
    tuning: DownloadTuning,
    progress: &dyn Progress,
) -> Result<Streamed, Error> {
    let mut cmd = tools.command("pg_restore", Some(into));
    cmd.args(args)
        .arg("--no-password")
        .arg(format!("--dbname={}", conninfo_dbname(&into.dbname)));
    run_pg_restore(store, tools, cmd, &into.password, entry, tuning, progress)
        .await
        .map(|(streamed, _)| streamed)
}

/// Feeds the dump of `entry` to an already configured `pg_restore` command, decompressing
/// Backstop's own zstd on the way when the dump has it ([`Stored`]); kills it on a checksum
/// mismatch; maps a non-zero exit to `PgRestoreFailed`.
pub(crate) async fn run_pg_restore(
    store: &dyn ObjectStore,
    tools: &PgTools,
    cmd: tokio::process::Command,
    password: &Password,
    entry: &DatabaseBackup,
    tuning: DownloadTuning,
    progress: &dyn Progress,
) -> Result<(Streamed, String), Error> {
    let artifact = &entry.artifact;
    let mut child = tools.spawn("pg_restore", cmd)?;
    let stdin: Option<Box<dyn tokio::io::AsyncWrite + Unpin + Send>> =
        child
            .stdin
            .take()
            .map(|pipe| match Stored::of(&entry.compression) {
                Stored::ZstdStream => {
                    Box::new(async_compression::tokio::write::ZstdDecoder::new(pipe))
                        as Box<dyn tokio::io::AsyncWrite + Unpin + Send>
                }
                Stored::Archive => Box::new(pipe),
            });
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let streaming = async {
        let mut sink = stdin;
        let r = stream_verified(store, artifact, &mut sink, tuning, progress).await;
        if r.is_err() {
            // Kill before the pipe closes, so pg_restore never sees an end of input.
            let _ = child.start_kill();
        }
        drop(sink);
        r
    };
    let collect_stdout = async {
        let mut text = String::new();
        if let Some(mut out) = stdout {
            let _ = out.read_to_string(&mut text).await;
        }
        text
    };
    let (streamed, stderr, stdout) = tokio::join!(streaming, stderr_tail(stderr), collect_stdout);
    let status = child
        .wait()
        .await
        .map_err(|e| Error::PgRestoreFailed(format!("waiting for pg_restore: {e}")))?;
    let streamed = streamed?;
    if !status.success() {
        return Err(Error::PgRestoreFailed(
            password.redact(&describe_exit(status, &stderr)),
        ));
    }
    Ok((streamed, stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_fit_postgres_limits() {
        let long = "x".repeat(80);
        let n = derived_name(&long, "failed_20260101000000");
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("_failed_20260101000000"));
        assert_eq!(derived_name("app", "restore_1"), "app_restore_1");
        assert_eq!(
            timestamp(time::macros::datetime!(2026-11-23 09:08:07 UTC)),
            "20261123090807"
        );
        assert_eq!(
            maintenance_target(&DbTarget::from_url("postgres://u@h/postgres").unwrap()).dbname,
            "template1"
        );
        assert!("sideways".parse::<RestoreMode>().is_err());
    }
}
