//! `backstop db backup|verify|restore`: a PostgreSQL database dumped into the catalog, a
//! backup proved readable (optionally by a restore test), a backup restored by swap or in
//! place.

use std::time::Duration;

use backstop_core::db::backup::{backup_database, BackupRequest, Compression};
use backstop_core::db::restore::{restore_database, RestoreMode, RestoreRequest};
use backstop_core::db::tools::PgTools;
use backstop_core::db::verify::verify_backup;
use backstop_core::store::download::DownloadTuning;
use backstop_core::Error;
use clap::{Args, Subcommand};

use crate::cli::{ctrl_c, CatalogArgs, DatabaseArgs};
use crate::progress::Bar;
use crate::render;

#[derive(Subcommand)]
pub enum DbCommand {
    /// Stream a pg_dump of the database into S3 and record it in the catalog; prints the backup id.
    Backup(BackupArgs),
    /// Check a backup: size and SHA-256, archive readable, optionally a restore test.
    Verify(VerifyArgs),
    /// Restore a backup into the database.
    Restore(RestoreArgs),
}

#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    #[command(flatten)]
    db: DatabaseArgs,
    /// Application the backup belongs to (default: the database name).
    #[arg(long)]
    application: Option<String>,
    /// Application version or commit being protected.
    #[arg(long)]
    app_version: Option<String>,
    /// Add to (or retry) this backup id: other targets of the same backup are kept, and a
    /// database already in it is not dumped again.
    #[arg(long)]
    backup_id: Option<String>,
    /// auto (stream-zstd:1), stream-zstd[:1-19] (pg_dump -Z0, Backstop's zstd on every core),
    /// gzip[:1-9] or zstd[:1-22] (pg_dump's own, zstd with pg_dump 16+), none.
    #[arg(long, default_value = "auto")]
    compression: Compression,
    /// Give up (and abort the upload) after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    #[arg(long)]
    backup_id: String,
    /// Also restore into a scratch database on the --database-url server and compare row counts.
    #[arg(long)]
    restore_test: bool,
    #[command(flatten)]
    db: DatabaseArgs,
}

#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    #[arg(long)]
    backup_id: String,
    #[command(flatten)]
    db: DatabaseArgs,
    /// swap: restore into a new database and swap it in, keeping the old one as
    /// <db>_failed_<timestamp>; in-place: pg_restore --clean --single-transaction.
    #[arg(long, default_value = "swap")]
    mode: RestoreMode,
    /// Which database of the backup to restore, when it holds several.
    #[arg(long)]
    database: Option<String>,
    /// The server (host:port) that database was backed up from, when the backup holds
    /// databases of that name on several servers.
    #[arg(long)]
    server: Option<String>,
    /// The application whose backup it is, when the id is in several.
    #[arg(long)]
    application: Option<String>,
    /// In-place only: skip the forensic dump of the current state.
    #[arg(long)]
    no_forensic_dump: bool,
    /// Give up after this many seconds (the target is left as it was).
    #[arg(long)]
    timeout: Option<u64>,
}

pub async fn run(cmd: DbCommand, json: bool) -> Result<(), Error> {
    let tools = PgTools::from_env();
    let bar = Bar::for_stderr();
    match cmd {
        DbCommand::Backup(args) => {
            let catalog = args.catalog.catalog().await?;
            let db = args.db.target().await?;
            let mut req = BackupRequest::new(args.application.unwrap_or_else(|| db.dbname.clone()));
            req.app_version = args.app_version;
            req.backup_id = args.backup_id;
            req.compression = args.compression;
            req.timeout = args.timeout.map(Duration::from_secs);
            let manifest = backup_database(&catalog, &tools, &db, &req, &bar, ctrl_c()).await?;
            if json {
                render::json(&manifest);
            } else {
                println!("{}", manifest.backup_id);
            }
        }
        DbCommand::Verify(args) => {
            let catalog = args.catalog.catalog().await?;
            let server = if args.restore_test {
                Some(args.db.target().await?)
            } else {
                None
            };
            let report = verify_backup(
                &catalog,
                &tools,
                &args.backup_id,
                server.as_ref(),
                DownloadTuning::default(),
                &bar,
            )
            .await?;
            if json {
                render::json(&report);
            } else {
                render::verified(&report);
            }
        }
        DbCommand::Restore(args) => {
            let catalog = args.catalog.catalog().await?;
            let db = args.db.target().await?;
            let mut req = RestoreRequest::new(args.backup_id, args.mode);
            req.database = args.database;
            req.server = args.server;
            req.application = args.application;
            req.forensic_dump = !args.no_forensic_dump;
            req.timeout = args.timeout.map(Duration::from_secs);
            let report = restore_database(&catalog, &tools, &db, &req, &bar, ctrl_c()).await?;
            if json {
                render::json(&report);
            } else {
                render::restored(&report);
            }
        }
    }
    Ok(())
}
