//! Backup of one PostgreSQL database into the catalog: the real `pg_dump` in custom format,
//! its stdout streamed straight into an S3 multipart upload (nothing on local disk), exact row
//! counts taken in the very snapshot the dump reads (`pg_export_snapshot` + `pg_dump
//! --snapshot`), and the manifest written last. Any failure, timeout or cancel aborts the
//! upload, so nothing is left that looks like a good backup.

use std::future::Future;
use std::process::ExitStatus;
use std::str::FromStr;
use std::time::Duration;

use time::OffsetDateTime;

use crate::catalog::Catalog;
use crate::db::properties;
use crate::db::session::Session;
use crate::db::target::DbTarget;
use crate::db::tools::{describe_exit, stderr_tail, PgTools};
use crate::error::Error;
use crate::model::manifest::{
    check_segment, new_backup_id, Artifact, BackupState, DatabaseBackup, Manifest, Purpose,
    TableCount, MANIFEST_FORMAT,
};
use crate::progress::Progress;
use crate::store::upload::{upload_stream, UploadTuning, Uploaded};

/// pg_dump's compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// zstd when pg_dump supports it (16+), gzip otherwise.
    Auto,
    Gzip(u8),
    Zstd(u8),
    None,
}

impl FromStr for Compression {
    type Err = Error;
    /// `auto`, `none`, `gzip`, `gzip:N` (1-9), `zstd`, `zstd:N` (1-22).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::InvalidInput(format!(
                "compression {s:?}: use auto, none, gzip[:1-9] or zstd[:1-22]"
            ))
        };
        let (method, level) = match s.split_once(':') {
            Some((m, l)) => (m, Some(l.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        match (method, level) {
            ("auto", None) => Ok(Compression::Auto),
            ("none", None) => Ok(Compression::None),
            ("gzip", None) => Ok(Compression::Gzip(6)),
            ("gzip", Some(l @ 1..=9)) => Ok(Compression::Gzip(l)),
            ("zstd", None) => Ok(Compression::Zstd(3)),
            ("zstd", Some(l @ 1..=22)) => Ok(Compression::Zstd(l)),
            _ => Err(bad()),
        }
    }
}

impl Compression {
    /// The concrete method for a pg_dump of this major version, as `(argument, label)`.
    fn resolve(self, pg_dump_major: u32) -> Result<(String, String), Error> {
        let modern = pg_dump_major >= 16;
        let chosen = match self {
            Compression::Auto if modern => Compression::Zstd(3),
            Compression::Auto => Compression::Gzip(6),
            other => other,
        };
        Ok(match chosen {
            Compression::Gzip(l) if modern => (format!("--compress=gzip:{l}"), format!("gzip:{l}")),
            Compression::Gzip(l) => (format!("--compress={l}"), format!("gzip:{l}")),
            Compression::Zstd(l) if modern => (format!("--compress=zstd:{l}"), format!("zstd:{l}")),
            Compression::Zstd(_) => {
                return Err(Error::InvalidInput(format!(
                    "zstd compression needs pg_dump 16 or newer; this pg_dump is {pg_dump_major}"
                )))
            }
            Compression::None if modern => ("--compress=none".to_string(), "none".to_string()),
            Compression::None | Compression::Auto => {
                ("--compress=0".to_string(), "none".to_string())
            }
        })
    }
}

/// What to back up and how.
#[derive(Clone, Debug)]
pub struct BackupRequest {
    pub application: String,
    /// Given by the caller (the state machine uses its execution name), so a retried call
    /// finds the finished backup instead of dumping again; a new id when `None`.
    pub backup_id: Option<String>,
    pub app_version: Option<String>,
    pub purpose: Purpose,
    pub compression: Compression,
    /// The whole backup is stopped and aborted past this.
    pub timeout: Option<Duration>,
    pub tuning: UploadTuning,
}

impl BackupRequest {
    pub fn new(application: impl Into<String>) -> Self {
        BackupRequest {
            application: application.into(),
            backup_id: None,
            app_version: None,
            purpose: Purpose::Backup,
            compression: Compression::Auto,
            timeout: None,
            tuning: UploadTuning::default(),
        }
    }
}

/// Backs up `db` into `catalog`; returns the completed manifest. `cancel` resolving stops the
/// backup, like a timeout, with everything aborted.
pub async fn backup_database(
    catalog: &Catalog,
    tools: &PgTools,
    db: &DbTarget,
    req: &BackupRequest,
    progress: &dyn Progress,
    cancel: impl Future<Output = ()>,
) -> Result<Manifest, Error> {
    check_segment("application", &req.application)?;
    catalog.store.check_bucket().await?;
    if let Some(id) = &req.backup_id {
        check_segment("backup id", id)?;
        if let Some(m) = catalog.read_manifest(&req.application, id).await? {
            if m.databases.iter().any(|d| d.is(&db.server(), &db.dbname)) {
                tracing::info!(backup_id = %id, database = %db.dbname, server = %db.server(), "already backed up");
                return Ok(m);
            }
        }
    }
    let (dump_major, pg_dump_version) = tools.version("pg_dump").await?;
    let (compress_arg, compression) = req.compression.resolve(dump_major)?;

    let session = Session::connect(db).await?;
    let (server_version, server_version_num) = session.server_version().await?;
    let properties = properties::read(&session, &db.dbname).await?;
    let snapshot = session.begin_exported_snapshot().await?;

    let started_at = OffsetDateTime::now_utc();
    let backup_id = req
        .backup_id
        .clone()
        .unwrap_or_else(|| new_backup_id(started_at));
    let key = catalog.dump_key(&req.application, &backup_id, &db.server(), &db.dbname);
    tracing::info!(backup_id, database = %db, key, compression, "backup starting");

    let upload_id = catalog.store.create_multipart(&key).await?;
    progress.start(&format!("dump {}", db.dbname), None);
    let work = dump_and_upload(
        catalog,
        tools,
        db,
        &session,
        &key,
        &upload_id,
        &snapshot,
        &compress_arg,
        req.tuning,
        progress,
    );
    let outcome = run_bounded("backup", req.timeout, cancel, work).await;
    progress.finish();

    let mut manifest = Manifest {
        format_version: MANIFEST_FORMAT,
        backup_id: backup_id.clone(),
        application: req.application.clone(),
        app_version: req.app_version.clone(),
        purpose: req.purpose.clone(),
        state: BackupState::Failed,
        started_at,
        finished_at: OffsetDateTime::now_utc(),
        databases: Vec::new(),
        instances: Vec::new(),
        error: None,
        deployed: None,
        run: None,
    };
    let completed = async {
        let (uploaded, tables) = outcome?;
        let parts = uploaded.parts.len() as u32;
        catalog
            .store
            .complete_multipart(&key, &upload_id, uploaded.parts)
            .await?;
        Ok::<_, Error>((uploaded.bytes, uploaded.sha256, parts, tables))
    }
    .await;
    let (bytes, sha256, parts, tables) = match completed {
        Ok(done) => done,
        Err(e) => {
            if let Err(abort) = catalog.store.abort_multipart(&key, &upload_id).await {
                tracing::error!(backup_id, key, error = %abort, "could not abort the multipart upload");
            }
            manifest.error = Some(format!(
                "{}: {}",
                e.error_type(),
                db.password.redact(&e.to_string())
            ));
            manifest.finished_at = OffsetDateTime::now_utc();
            // Best effort: a failed manifest tells operators what happened; it can never be
            // mistaken for a good backup.
            let failed = catalog.update_manifest(&req.application, &backup_id, |current| {
                Ok(manifest.clone().merged_into(current))
            });
            if let Err(write) = failed.await {
                tracing::warn!(backup_id, error = %write, "could not record the failed backup");
            }
            tracing::error!(backup_id, error = %e, "backup failed");
            return Err(e);
        }
    };
    // Ends the read-only snapshot transaction. pg_dump imported the snapshot and exited 0, so
    // the dump is complete and consistent whether or not this last round trip succeeds.
    if let Err(e) = session.commit().await {
        tracing::warn!(backup_id, error = %e, "could not end the snapshot transaction");
    }
    let dump_key = key.clone();
    manifest.databases.push(DatabaseBackup {
        database: db.dbname.clone(),
        server: db.server(),
        server_version,
        server_version_num: server_version_num.0,
        pg_dump_version,
        compression,
        artifact: Artifact {
            key,
            bytes,
            sha256,
            parts,
        },
        tables,
        properties: Some(properties),
    });
    manifest.state = BackupState::Completed;
    manifest.finished_at = OffsetDateTime::now_utc();
    let written = catalog
        .update_manifest(&req.application, &backup_id, |current| {
            Ok(manifest.clone().merged_into(current))
        })
        .await;
    let manifest = match written {
        Ok(m) => m,
        Err(e) => {
            // Without its manifest the dump is no backup; do not leave it behind as an orphan.
            if let Err(del) = catalog.store.delete(&dump_key).await {
                tracing::error!(backup_id, key = dump_key, error = %del, "could not remove the dump of a backup whose manifest failed");
            }
            return Err(e);
        }
    };
    tracing::info!(backup_id, bytes, "backup completed");
    Ok(manifest)
}

/// Runs pg_dump, streams it into the upload and counts rows, all at once.
#[allow(clippy::too_many_arguments)]
async fn dump_and_upload(
    catalog: &Catalog,
    tools: &PgTools,
    db: &DbTarget,
    session: &Session,
    key: &str,
    upload_id: &str,
    snapshot: &str,
    compress_arg: &str,
    tuning: UploadTuning,
    progress: &dyn Progress,
) -> Result<(Uploaded, Vec<TableCount>), Error> {
    let mut cmd = tools.command("pg_dump", Some(db));
    cmd.arg("--format=custom")
        .arg(compress_arg)
        .arg(format!("--snapshot={snapshot}"))
        .arg("--no-password");
    let mut child = tools.spawn("pg_dump", cmd)?;
    drop(child.stdin.take());
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::DumpFailed("pg_dump has no stdout".to_string()))?;
    let stderr = child.stderr.take();

    let upload = upload_stream(&catalog.store, key, upload_id, stdout, tuning, progress);
    let (uploaded, counts, stderr) =
        tokio::join!(upload, session.row_counts(), stderr_tail(stderr));
    let status: ExitStatus = child
        .wait()
        .await
        .map_err(|e| Error::DumpFailed(format!("waiting for pg_dump: {e}")))?;
    // An upload that failed first closed the pipe, and pg_dump died of it (SIGPIPE): the
    // upload's error is the cause.
    let uploaded = uploaded?;
    if !status.success() {
        return Err(Error::DumpFailed(
            db.password.redact(&describe_exit(status, &stderr)),
        ));
    }
    Ok((uploaded, counts?))
}

/// What the work's caller still does once bounded work ends, at most: drop a scratch
/// database or abort a multipart upload, write the manifest. Bounded work stops this long
/// before the deadline (`crate::deadline`), so that cleanup always runs.
pub const CLEANUP_RESERVE: Duration = Duration::from_secs(60);

/// Runs `work` unless it passes `timeout`, comes within [`CLEANUP_RESERVE`] of the deadline,
/// or `cancel` resolves first; each drops `work` (which kills its child processes) and
/// returns a named error. Work that cannot start with that much time left is `TimedOut` at
/// once.
pub async fn run_bounded<T>(
    operation: &str,
    timeout: Option<Duration>,
    cancel: impl Future<Output = ()>,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let timeout = crate::deadline::limit(timeout, CLEANUP_RESERVE);
    if timeout == Some(Duration::ZERO) {
        return Err(Error::TimedOut {
            operation: format!("{operation} (not started: too close to the deadline)"),
            seconds: 0,
        });
    }
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        r = work => r,
        _ = deadline => Err(Error::TimedOut {
            operation: operation.to_string(),
            seconds: timeout.map(|t| t.as_secs()).unwrap_or_default(),
        }),
        _ = cancel => Err(Error::Cancelled(operation.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_parses_and_resolves_per_pg_dump_version() {
        assert_eq!("auto".parse::<Compression>().unwrap(), Compression::Auto);
        assert_eq!(
            "gzip:9".parse::<Compression>().unwrap(),
            Compression::Gzip(9)
        );
        assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd(3));
        for bad in ["gzip:0", "gzip:10", "zstd:23", "lz5", "gzip:x", ""] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
        assert_eq!(
            Compression::Auto.resolve(15).unwrap(),
            ("--compress=6".to_string(), "gzip:6".to_string())
        );
        assert_eq!(Compression::Auto.resolve(17).unwrap().1, "zstd:3");
        assert_eq!(
            Compression::Gzip(4).resolve(16).unwrap().0,
            "--compress=gzip:4"
        );
        assert_eq!(
            Compression::Zstd(3).resolve(15).unwrap_err().error_type(),
            "InvalidInput"
        );
        assert_eq!(Compression::None.resolve(15).unwrap().0, "--compress=0");
    }
}
