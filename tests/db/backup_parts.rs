//! One backup, several targets: parts of the same backup id written at the same time (as the
//! state machine's Map does) all end up in its one manifest, and a retried target is not
//! backed up again. Against moto's conditional S3 writes (the in-memory store's are in the
//! `tasks` binary).

use std::sync::Arc;

use backstop_core::catalog::Catalog;
use backstop_core::model::manifest::{
    BackupState, InstanceBackup, InstanceBackupMode, Manifest, Purpose, MANIFEST_FORMAT,
};
use backstop_core::store::S3Store;

use crate::support::{Bed, Run, SHOP_SCHEMA};

const ID: &str = "20261125T150000Z-feedbeef";

#[test]
fn parallel_targets_of_one_backup_all_land_in_its_manifest_and_a_retry_dumps_nothing() {
    let dbs = ["orders_a", "orders_b", "orders_c", "orders_d"];
    let bed = dbs
        .iter()
        .fold(Bed::new(), |b, db| b.database(db, SHOP_SCHEMA))
        .moto()
        .build();
    let cli = bed.cli();
    // Four backups of the same id at once: each reads, merges and conditionally writes.
    let children: Vec<_> = dbs
        .iter()
        .map(|db| {
            let cmd = cli.command(&cli.in_catalog(&[
                "db",
                "backup",
                "--application",
                "shop",
                "--backup-id",
                ID,
                "--database-url",
                &cli.url(db),
            ]));
            std::thread::spawn(move || Run::of(cmd))
        })
        .collect();
    for child in children {
        let run = child.join().unwrap();
        assert!(run.ok, "{}", run.all());
        assert_eq!(run.stdout.trim(), ID);
    }
    let manifest = bed.manifest("shop", ID);
    assert_eq!(manifest["state"], "completed", "{manifest}");
    let mut names: Vec<&str> = manifest["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["database"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, dbs, "no part lost to a concurrent write");

    // A retried target finds its part and dumps nothing: the dump object is untouched.
    let dump = format!(
        "backstop/shop/{ID}/db/127.0.0.1%3A{}/orders_b.dump",
        bed.pg().port
    );
    let before = bed.get(&dump);
    let keys = bed.keys();
    let again = cli.db_backup("orders_b", &["--application", "shop", "--backup-id", ID]);
    assert_eq!(again, ID);
    assert_eq!(bed.get(&dump), before);
    assert_eq!(bed.keys(), keys);
    assert_eq!(bed.open_multipart_uploads(), 0);
}

#[test]
fn sixteen_concurrent_manifest_updates_lose_nothing() {
    let bed = Bed::new().moto().build();
    let catalog = Catalog::new(Arc::new(S3Store::new(bed.s3(), &bed.bucket)), "backstop").unwrap();
    let now = time::OffsetDateTime::now_utc();
    let part = |n: usize| Manifest {
        format_version: MANIFEST_FORMAT,
        backup_id: ID.to_string(),
        application: "fleet".to_string(),
        app_version: None,
        purpose: Purpose::Backup,
        state: BackupState::Completed,
        started_at: now,
        finished_at: now,
        databases: Vec::new(),
        instances: vec![InstanceBackup {
            instance_id: format!("i-{n:08x}"),
            availability_zone: "us-east-1a".to_string(),
            mode: InstanceBackupMode::Snapshots,
            image_id: None,
            state: BackupState::Completed,
            volumes: Vec::new(),
            error: None,
        }],
        error: None,
        deployed: None,
        run: None,
    };
    bed.rt.block_on(async {
        let tasks: Vec<_> = (0..16)
            .map(|n| {
                let catalog = catalog.clone();
                let mine = part(n);
                tokio::spawn(async move {
                    catalog
                        .update_manifest("fleet", ID, |current| {
                            Ok(mine.clone().merged_into(current))
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    let manifest = bed
        .rt
        .block_on(catalog.read_manifest("fleet", ID))
        .unwrap()
        .unwrap();
    let mut ids: Vec<String> = manifest
        .instances
        .iter()
        .map(|i| i.instance_id.clone())
        .collect();
    ids.sort();
    let want: Vec<String> = (0..16).map(|n| format!("i-{n:08x}")).collect();
    assert_eq!(ids, want);
    assert_eq!(manifest.state, BackupState::Completed);
}
