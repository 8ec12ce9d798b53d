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

/// How a dump is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// [`Compression::Stream`] at [`STREAM_LEVEL`].
    Auto,
    /// pg_dump's own (single-threaded) gzip.
    Gzip(u8),
    /// pg_dump's own zstd (16+).
    Zstd(u8),
    /// `pg_dump -Z0`, the stream compressed by Backstop with zstd on every core on its way to
    /// S3: pg_dump at its COPY rate, the archive smaller than gzip's. The object is one zstd
    /// frame holding a custom-format archive (`zstd -d | pg_restore` reads it by hand).
    Stream(u8),
    None,
}

/// The zstd level of [`Compression::Auto`], chosen by measurement: on 2 cores level 1 was
/// faster than 3 and 6, with a smaller archive and the least memory (README, "Throughput and
/// memory").
pub const STREAM_LEVEL: u8 = 1;

/// The manifest's label of a [`Compression::Stream`] dump: `stream-zstd:<level>`.
const STREAM_LABEL: &str = "stream-zstd";

impl FromStr for Compression {
    type Err = Error;
    /// `auto`, `none`, `gzip`, `gzip:N` (1-9), `zstd`, `zstd:N` (1-22), `stream-zstd`,
    /// `stream-zstd:N` (1-19).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::InvalidInput(format!(
                "compression {s:?}: use auto, none, gzip[:1-9], zstd[:1-22] or stream-zstd[:1-19]"
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
            (STREAM_LABEL, None) => Ok(Compression::Stream(STREAM_LEVEL)),
            (STREAM_LABEL, Some(l @ 1..=19)) => Ok(Compression::Stream(l)),
            _ => Err(bad()),
        }
    }
}

/// What a dump's stored bytes are, from the compression its manifest records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// A custom-format archive as pg_dump wrote it (gzip, zstd or nothing inside it).
    Archive,
    /// One zstd frame holding a custom-format archive written with `-Z0`.
    ZstdStream,
}

impl Stored {
    /// The form of a dump whose manifest says `compression` (`gzip:6`, `stream-zstd:3`, …).
    pub fn of(compression: &str) -> Stored {
        if compression.split(':').next() == Some(STREAM_LABEL) {
            Stored::ZstdStream
        } else {
            Stored::Archive
        }
    }
}

/// What pg_dump is asked for and what Backstop does to its output.
#[derive(Debug)]
struct Resolved {
    /// pg_dump's `--compress` argument.
    argument: String,
    /// What the manifest records.
    label: String,
    /// Backstop's own zstd level, when it compresses the stream.
    stream_level: Option<u8>,
}

impl Compression {
    /// The concrete method for a pg_dump of this major version.
    fn resolve(self, pg_dump_major: u32) -> Result<Resolved, Error> {
        let modern = pg_dump_major >= 16;
        let plain = |argument: String, label: String| Resolved {
            argument,
            label,
            stream_level: None,
        };
        let none = || {
            if modern {
                "--compress=none".to_string()
            } else {
                "--compress=0".to_string()
            }
        };
        Ok(match self {
            Compression::Auto | Compression::Stream(_) => {
                let level = match self {
                    Compression::Stream(l) => l,
                    _ => STREAM_LEVEL,
                };
                Resolved {
                    argument: none(),
                    label: format!("{STREAM_LABEL}:{level}"),
                    stream_level: Some(level),
                }
            }
            Compression::Gzip(l) if modern => {
                plain(format!("--compress=gzip:{l}"), format!("gzip:{l}"))
            }
            Compression::Gzip(l) => plain(format!("--compress={l}"), format!("gzip:{l}")),
            Compression::Zstd(l) if modern => {
                plain(format!("--compress=zstd:{l}"), format!("zstd:{l}"))
            }
            Compression::Zstd(_) => {
                return Err(Error::InvalidInput(format!(
                    "zstd compression needs pg_dump 16 or newer; this pg_dump is {pg_dump_major}"
                )))
            }
            Compression::None => plain(none(), "none".to_string()),
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
    let resolved = req.compression.resolve(dump_major)?;

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
    tracing::info!(backup_id, database = %db, key, compression = %resolved.label, "backup starting");

    let upload_id = catalog.store.create_multipart(&key).await?;
    progress.start(&format!("dump {}", db.dbname), None);
    let work = dump_and_upload(
        catalog, tools, db, &session, &key, &upload_id, &snapshot, &resolved, req.tuning, progress,
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
        compression: resolved.label.clone(),
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

/// zstd at `level` over `input`, on as many worker threads as the process has cores (the
/// calling task only moves bytes): pg_dump keeps its COPY rate while the other cores compress.
fn zstd_encoder(
    input: impl tokio::io::AsyncRead + Unpin + Send,
    level: u8,
) -> impl tokio::io::AsyncRead + Unpin + Send {
    use async_compression::zstd::CParameter;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    async_compression::tokio::bufread::ZstdEncoder::with_quality_and_params(
        tokio::io::BufReader::with_capacity(1 << 20, input),
        async_compression::Level::Precise(i32::from(level)),
        &[CParameter::nb_workers(workers)],
    )
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
    compression: &Resolved,
    tuning: UploadTuning,
    progress: &dyn Progress,
) -> Result<(Uploaded, Vec<TableCount>), Error> {
    let mut cmd = tools.command("pg_dump", Some(db));
    cmd.arg("--format=custom")
        .arg(&compression.argument)
        .arg(format!("--snapshot={snapshot}"))
        .arg("--no-password");
    let mut child = tools.spawn("pg_dump", cmd)?;
    drop(child.stdin.take());
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::DumpFailed("pg_dump has no stdout".to_string()))?;
    let stderr = child.stderr.take();

    let stream: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match compression.stream_level {
        Some(level) => Box::new(zstd_encoder(stdout, level)),
        None => Box::new(stdout),
    };
    let upload = upload_stream(&catalog.store, key, upload_id, stream, tuning, progress);
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
        assert_eq!(
            "stream-zstd:7".parse::<Compression>().unwrap(),
            Compression::Stream(7)
        );
        for bad in [
            "gzip:0",
            "gzip:10",
            "zstd:23",
            "stream-zstd:20",
            "lz5",
            "gzip:x",
            "",
        ] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
        // auto: pg_dump without compression, Backstop's zstd on the stream, any pg_dump.
        for major in [13, 15, 17] {
            let auto = Compression::Auto.resolve(major).unwrap();
            assert_eq!(auto.label, format!("stream-zstd:{STREAM_LEVEL}"));
            assert_eq!(auto.stream_level, Some(STREAM_LEVEL));
            assert!(
                auto.argument.starts_with("--compress="),
                "{}",
                auto.argument
            );
        }
        assert_eq!(
            Compression::Gzip(6).resolve(15).unwrap().argument,
            "--compress=6"
        );
        assert_eq!(Compression::Zstd(3).resolve(17).unwrap().label, "zstd:3");
        assert_eq!(
            Compression::Gzip(4).resolve(16).unwrap().argument,
            "--compress=gzip:4"
        );
        assert_eq!(
            Compression::Zstd(3).resolve(15).unwrap_err().error_type(),
            "InvalidInput"
        );
        assert_eq!(Stored::of("stream-zstd:3"), Stored::ZstdStream);
        for archive in ["gzip:6", "zstd:3", "none", ""] {
            assert_eq!(Stored::of(archive), Stored::Archive);
        }
        assert_eq!(
            Compression::None.resolve(15).unwrap().argument,
            "--compress=0"
        );
    }
}
