//! Proof that a backup is good: every artifact exists with the manifest's size and SHA-256
//! (a streamed re-read), `pg_restore --list` parses the archive and lists every table the
//! manifest counted, and optionally a restore test into a scratch database on a given server,
//! checked against the manifest's row counts. The scratch database is always dropped.

use serde::Serialize;
use time::OffsetDateTime;

use crate::catalog::Catalog;
use crate::db::restore::{
    derived_name, ensure_completed, maintenance_target, restore_and_count, run_pg_restore,
    timestamp,
};
use crate::db::session::{Marker, Session};
use crate::db::target::{DbTarget, Password};
use crate::db::tools::PgTools;
use crate::error::Error;
use crate::model::manifest::Manifest;
use crate::progress::Progress;
use crate::store::download::DownloadTuning;

/// What was checked for one database.
#[derive(Clone, Debug, Serialize)]
pub struct DatabaseVerified {
    pub database: String,
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
    /// Entries in the archive's table of contents.
    pub archive_entries: usize,
    /// Tables restored and counted in the scratch database, when a restore test ran.
    pub restore_test_tables: Option<usize>,
}

/// A passed verification.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub backup_id: String,
    pub databases: Vec<DatabaseVerified>,
}

/// Verifies every database of a backup; `restore_test` names a server (and login) to run the
/// restore test on.
pub async fn verify_backup(
    catalog: &Catalog,
    tools: &PgTools,
    backup_id: &str,
    restore_test: Option<&DbTarget>,
    tuning: DownloadTuning,
    progress: &dyn Progress,
) -> Result<VerifyReport, Error> {
    let manifest = catalog.find(backup_id).await?;
    ensure_completed(&manifest)?;
    verify_databases(catalog, tools, &manifest, restore_test, tuning, progress).await
}

/// Verifies the databases of a manifest (whatever state its instances are in).
pub async fn verify_databases(
    catalog: &Catalog,
    tools: &PgTools,
    manifest: &Manifest,
    restore_test: Option<&DbTarget>,
    tuning: DownloadTuning,
    progress: &dyn Progress,
) -> Result<VerifyReport, Error> {
    let mut report = VerifyReport {
        backup_id: manifest.backup_id.clone(),
        databases: Vec::new(),
    };
    for entry in &manifest.databases {
        let artifact = &entry.artifact;
        progress.start(&format!("verify {}", entry.database), Some(artifact.bytes));
        let mut cmd = tools.command("pg_restore", None);
        cmd.arg("--list");
        let listed = run_pg_restore(
            catalog.store.as_ref(),
            tools,
            cmd,
            &Password::default(),
            entry,
            tuning,
            progress,
        )
        .await;
        progress.finish();
        let (streamed, list) = listed.map_err(|e| match e {
            Error::PgRestoreFailed(reason) => Error::ArchiveUnreadable {
                bucket: catalog.store.bucket().to_string(),
                key: artifact.key.clone(),
                reason,
            },
            other => other,
        })?;
        let entries: Vec<&str> = list
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
            .collect();
        // "3374; 0 16390 TABLE DATA public accounts owner"
        let missing: Vec<String> = entry
            .tables
            .iter()
            .filter(|t| {
                let needle = format!(" TABLE DATA {} {} ", t.schema, t.table);
                !entries.iter().any(|l| l.contains(&needle))
            })
            .map(|t| format!("{}.{}", t.schema, t.table))
            .collect();
        if !missing.is_empty() {
            return Err(Error::ArchiveUnreadable {
                bucket: catalog.store.bucket().to_string(),
                key: artifact.key.clone(),
                reason: format!("no data in the archive for {}", missing.join(", ")),
            });
        }
        let mut verified = DatabaseVerified {
            database: entry.database.clone(),
            key: artifact.key.clone(),
            bytes: streamed.bytes,
            sha256: streamed.sha256,
            archive_entries: entries.len(),
            restore_test_tables: None,
        };
        if let Some(server) = restore_test {
            let scratch = derived_name(
                "backstop_verify",
                &format!(
                    "{}_{:04x}",
                    timestamp(OffsetDateTime::now_utc()),
                    rand::random::<u16>()
                ),
            );
            let maint = Session::connect(&maintenance_target(server)).await?;
            maint.create_database(&scratch, None).await?;
            let marked = maint
                .mark_database(
                    &scratch,
                    Marker::VerifyScratch,
                    &format!("restore test of backup {}", manifest.backup_id),
                )
                .await;
            if let Err(e) = marked {
                let _ = maint.drop_database(&scratch).await;
                return Err(e);
            }
            let tested = restore_and_count(
                &format!("restore test {}", entry.database),
                catalog.store.as_ref(),
                tools,
                &server.with_dbname(&scratch),
                entry,
                &["--exit-on-error", "--no-owner"],
                tuning,
                progress,
                None,
                std::future::pending(),
            )
            .await
            .map(|found| found.len());
            let dropped = maint.drop_database(&scratch).await;
            let tables = tested?;
            dropped?;
            verified.restore_test_tables = Some(tables);
        }
        report.databases.push(verified);
    }
    Ok(report)
}
