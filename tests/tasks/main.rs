//! The Lambdas' task handlers, fast and with no server: each runs on a `Context` whose
//! catalog is in memory (the `MemoryStore`, which keeps S3's rules) and whose AWS is a closed
//! port, a recording fake, or clients simulated with aws-smithy-mocks (tests named `mocked_…`).
//! Recording failed backups and deploys in the manifest ([`verify`]), the catalog over several
//! applications and concurrent parts ([`catalog`]), the drill and prune decisions ([`drill`],
//! [`prune`]), guard's filtering of stage events ([`guard`]), the deployment checks' alarms
//! ([`alarms`]), the `Throttled` error after the SDK's retries ([`throttled`]), and the object
//! store's upload and verified download ([`store`]).

#[path = "../support/mod.rs"]
mod support;

mod alarms;
mod catalog;
mod drill;
mod guard;
mod prune;
mod store;
mod throttled;
mod verify;

use backstop_core::model::manifest::{
    Artifact, BackupState, DatabaseBackup, Manifest, Purpose, TableCount, MANIFEST_FORMAT,
};
use time::OffsetDateTime;

/// A manifest of `application`'s backup `id`, started at `started`, in `state`, holding no
/// part yet.
pub fn manifest(
    application: &str,
    id: &str,
    started: OffsetDateTime,
    state: BackupState,
) -> Manifest {
    Manifest {
        format_version: MANIFEST_FORMAT,
        backup_id: id.to_string(),
        application: application.to_string(),
        app_version: None,
        purpose: Purpose::Backup,
        state,
        started_at: started,
        finished_at: started,
        databases: Vec::new(),
        instances: Vec::new(),
        error: None,
        deployed: None,
        run: None,
    }
}

/// One database's part of a backup, its dump at `key`.
pub fn database_part(database: &str, key: &str, bytes: u64) -> DatabaseBackup {
    DatabaseBackup {
        database: database.to_string(),
        server: "127.0.0.1:5432".to_string(),
        server_version: "17.2".to_string(),
        server_version_num: 170002,
        pg_dump_version: "17.2".to_string(),
        compression: "gzip:6".to_string(),
        artifact: Artifact {
            key: key.to_string(),
            bytes,
            sha256: "0".repeat(64),
            parts: 1,
        },
        tables: vec![TableCount {
            schema: "public".to_string(),
            table: "orders".to_string(),
            rows: 4000,
        }],
        properties: None,
    }
}

/// `2026-11-0<day> 00:00 UTC`.
pub fn day(day: u8) -> OffsetDateTime {
    time::macros::datetime!(2026-11-01 00:00 UTC) + time::Duration::days(i64::from(day) - 1)
}

/// Runs a future to its end on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
