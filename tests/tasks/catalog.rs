//! The catalog in memory: listing, finding and the incident reports over several
//! applications, a malformed manifest (or report) named by its key rather than skipped, and
//! the parts of one backup written concurrently all landing in its one manifest through the
//! store's conditional writes.

use std::sync::Arc;

use backstop_core::catalog::Catalog;
use backstop_core::model::incident::{IncidentOutcome, IncidentReport, Versions, INCIDENT_FORMAT};
use backstop_core::model::manifest::{
    BackupState, InstanceBackup, InstanceBackupMode, Manifest, MANIFEST_FORMAT,
};
use backstop_core::model::run::RunDocument;
use backstop_core::store::ObjectStore;
use serde_json::json;

use crate::support::memory_catalog;
use crate::{block_on, database_part, day, manifest};

fn ids(list: &[Manifest]) -> Vec<&str> {
    list.iter().map(|m| m.backup_id.as_str()).collect()
}

fn incident(application: &str, backup_id: &str, written: u8) -> IncidentReport {
    IncidentReport {
        format_version: INCIDENT_FORMAT,
        application: application.to_string(),
        backup_id: backup_id.to_string(),
        execution_arn: format!("arn:aws:states:us-east-1:1:execution:protect:{backup_id}"),
        outcome: IncidentOutcome::DeployFailed,
        written_at: day(written),
        versions: Versions::default(),
        original_error: "CommandFailed".to_string(),
        original_cause: "migration 0042 failed".to_string(),
        checks: Vec::new(),
        restored: vec!["database shop".to_string()],
        restore_failure: None,
        restore_seconds: Some(12.5),
        failed_state: Vec::new(),
        timeline: Vec::new(),
    }
}

fn put_json(catalog: &Catalog, key: &str, value: &impl serde::Serialize) {
    block_on(
        catalog
            .store
            .put_bytes(key, serde_json::to_vec(value).unwrap(), "application/json"),
    )
    .unwrap();
}

#[test]
fn list_find_and_incidents_span_every_application_newest_first() {
    let (catalog, _) = memory_catalog("backups");
    let mut shop_old = manifest(
        "shop",
        "20261101T000000Z-00000001",
        day(1),
        BackupState::Completed,
    );
    shop_old.app_version = Some("v1".to_string());
    let billing = manifest(
        "billing",
        "20261102T000000Z-00000002",
        day(2),
        BackupState::Completed,
    );
    let shop_failed = manifest(
        "shop",
        "20261103T000000Z-00000003",
        day(3),
        BackupState::Failed,
    );
    for m in [&shop_old, &billing, &shop_failed] {
        block_on(catalog.write_manifest(m)).unwrap();
    }
    // Other objects beside the manifests are not manifests.
    put_json(
        &catalog,
        &format!(
            "{}/drill-20261104.json",
            catalog.backup_dir("shop", &shop_old.backup_id)
        ),
        &json!({"passed": true}),
    );

    assert_eq!(
        block_on(catalog.applications()).unwrap(),
        ["billing", "shop"]
    );
    let all = block_on(catalog.list(None)).unwrap().manifests;
    assert_eq!(
        ids(&all),
        [
            shop_failed.backup_id.as_str(),
            &billing.backup_id,
            &shop_old.backup_id
        ]
    );
    let shop = block_on(catalog.list(Some("shop"))).unwrap().manifests;
    assert_eq!(
        ids(&shop),
        [shop_failed.backup_id.as_str(), &shop_old.backup_id]
    );
    assert_eq!(
        block_on(catalog.list(Some("a/b")))
            .unwrap_err()
            .error_type(),
        "InvalidInput"
    );

    // A backup is found in whichever application holds it.
    assert_eq!(block_on(catalog.find(&billing.backup_id)).unwrap(), billing);
    let err = block_on(catalog.find("20991231T000000Z-ffffffff")).unwrap_err();
    assert_eq!(err.error_type(), "BackupNotFound");
    assert!(err.to_string().contains("s3://backups/backstop/"), "{err}");
    assert_eq!(
        block_on(catalog.find("../../etc"))
            .unwrap_err()
            .error_type(),
        "InvalidInput"
    );

    // Incident reports, beside the backups of the deploys that failed.
    let shop_report = incident("shop", &shop_failed.backup_id, 5);
    let billing_report = incident("billing", &billing.backup_id, 4);
    for r in [&shop_report, &billing_report] {
        put_json(
            &catalog,
            &catalog.incident_key(&r.application, &r.backup_id, "json"),
            r,
        );
    }
    let reports = block_on(catalog.incidents(None)).unwrap();
    assert_eq!(reports, [shop_report.clone(), billing_report.clone()]);
    assert_eq!(
        block_on(catalog.incidents(Some("billing"))).unwrap(),
        [billing_report]
    );
    assert_eq!(
        block_on(catalog.incident(&shop_failed.backup_id)).unwrap(),
        shop_report
    );
    let err = block_on(catalog.incident(&shop_old.backup_id)).unwrap_err();
    assert_eq!(err.error_type(), "IncidentNotFound", "{err}");
}

#[test]
fn the_backup_of_a_pipeline_execution_is_its_newest_verified_one_not_a_failed_one() {
    let (catalog, _) = memory_catalog("backups");
    let run = |execution: &str| {
        RunDocument::from_json(
            &json!({
                "application": "shop",
                "version": {"commit": "v2", "pipeline_execution_id": execution},
                "targets": [{"type": "database", "url_env": "SHOP_DB_URL"}]
            })
            .to_string(),
        )
        .unwrap()
    };
    let mut verified = manifest(
        "shop",
        "20261101T000000Z-00000001",
        day(1),
        BackupState::Completed,
    );
    verified.run = Some(run("pipe-1"));
    let mut failed = manifest(
        "shop",
        "20261102T000000Z-00000002",
        day(2),
        BackupState::Failed,
    );
    failed.run = Some(run("pipe-1"));
    let mut other = manifest(
        "billing",
        "20261103T000000Z-00000003",
        day(3),
        BackupState::Completed,
    );
    other.run = Some(run("pipe-2"));
    for m in [&verified, &failed, &other] {
        block_on(catalog.write_manifest(m)).unwrap();
    }
    // Verify records a backup as its pipeline execution's once it passed.
    for m in [&verified, &other] {
        let execution = m
            .run
            .as_ref()
            .unwrap()
            .version
            .pipeline_execution_id
            .clone();
        block_on(catalog.record_pipeline_execution(
            execution.as_deref().unwrap(),
            &m.application,
            &m.backup_id,
        ))
        .unwrap();
    }
    let (found, doc) = block_on(catalog.find_by_pipeline_execution("pipe-1", "shop"))
        .unwrap()
        .expect("the verified backup of pipe-1");
    assert_eq!(found.backup_id, verified.backup_id);
    assert_eq!(doc, run("pipe-1"));
    assert!(
        block_on(catalog.find_by_pipeline_execution("pipe-9", "shop"))
            .unwrap()
            .is_none()
    );
    // A backup that failed after it was recorded no longer counts.
    block_on(catalog.record_pipeline_execution("pipe-1", "shop", &failed.backup_id)).unwrap();
    assert!(
        block_on(catalog.find_by_pipeline_execution("pipe-1", "shop"))
            .unwrap()
            .is_none()
    );
    // An entry pointing at another pipeline execution's backup is not believed, and another
    // application's entry for the same execution id is written beside shop's, never over it.
    block_on(catalog.record_pipeline_execution("pipe-1", "billing", &other.backup_id)).unwrap();
    assert!(
        block_on(catalog.find_by_pipeline_execution("pipe-1", "billing"))
            .unwrap()
            .is_none()
    );
    assert_eq!(
        block_on(catalog.pipeline_execution_applications("pipe-1")).unwrap(),
        ["billing", "shop"]
    );
}

#[test]
fn a_pipeline_executions_backup_is_found_in_two_reads_whatever_else_the_catalog_holds() {
    let (catalog, store) = memory_catalog("backups");
    let mut m = manifest(
        "shop",
        "20261101T000000Z-00000001",
        day(1),
        BackupState::Completed,
    );
    m.run = Some(
        RunDocument::from_json(
            &json!({"application": "shop",
                    "version": {"pipeline_execution_id": "pipe-1"},
                    "targets": [{"type": "database", "url_env": "SHOP_DB_URL"}]})
            .to_string(),
        )
        .unwrap(),
    );
    block_on(catalog.write_manifest(&m)).unwrap();
    block_on(catalog.record_pipeline_execution("pipe-1", "shop", &m.backup_id)).unwrap();
    // Another application's manifest that no longer parses (or a newer format): a listing of
    // the whole catalog fails on it, the lookup never reads it.
    block_on(store.put_bytes(
        "backstop/billing/20261102T000000Z-00000002/manifest.json",
        b"{not json".to_vec(),
        "application/json",
    ))
    .unwrap();
    let listing = block_on(catalog.list(None)).unwrap();
    assert_eq!(listing.manifests, std::slice::from_ref(&m));
    assert_eq!(listing.skipped.len(), 1, "{:?}", listing.skipped);
    let (found, _) = block_on(catalog.find_by_pipeline_execution("pipe-1", "shop"))
        .unwrap()
        .expect("found through the index");
    assert_eq!(found.backup_id, m.backup_id);
    // An id that cannot be a key has no backup, and touches nothing.
    assert!(
        block_on(catalog.find_by_pipeline_execution("../shop", "shop"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_malformed_manifest_or_report_is_named_by_its_key() {
    let (catalog, store) = memory_catalog("backups");
    let good = manifest(
        "shop",
        "20261101T000000Z-00000001",
        day(1),
        BackupState::Completed,
    );
    block_on(catalog.write_manifest(&good)).unwrap();
    let id = "20261102T000000Z-00000002";
    let key = catalog.manifest_key("shop", id);
    block_on(store.put_bytes(
        &key,
        b"{\"format_version\": 1, \"backup_id\": 42".to_vec(),
        "",
    ))
    .unwrap();
    // Listings leave it out and name it; reading it by its id is the named error.
    for listing in [
        block_on(catalog.list(None)).unwrap(),
        block_on(catalog.list(Some("shop"))).unwrap(),
    ] {
        assert_eq!(listing.manifests, std::slice::from_ref(&good));
        assert_eq!(listing.skipped.len(), 1);
        assert!(
            listing.skipped[0].contains(&format!("s3://backups/{key}")),
            "{:?}",
            listing.skipped
        );
    }
    for err in [
        block_on(catalog.find(id)).unwrap_err(),
        block_on(catalog.manifest("shop", id)).unwrap_err(),
    ] {
        assert_eq!(err.error_type(), "ManifestMalformed", "{err}");
        assert!(
            err.to_string().contains(&format!("s3://backups/{key}")),
            "{err}"
        );
    }
    // A manifest of a format this build does not read.
    block_on(store.put_bytes(&key, br#"{"format_version": 99}"#.to_vec(), "")).unwrap();
    let err = block_on(catalog.manifest("shop", id)).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "format_version 99 is not supported (this build reads {MANIFEST_FORMAT})"
        )),
        "{err}"
    );
    // The good backup is still found by id; a broken incident report is named too.
    assert_eq!(block_on(catalog.find(&good.backup_id)).unwrap(), good);
    let report_key = catalog.incident_key("shop", &good.backup_id, "json");
    block_on(store.put_bytes(&report_key, b"[]".to_vec(), "")).unwrap();
    let err = block_on(catalog.incident(&good.backup_id)).unwrap_err();
    assert_eq!(err.error_type(), "ManifestMalformed", "{err}");
    assert!(err.to_string().contains(&report_key), "{err}");
}

/// A change to a genuine manifest's JSON.
type Forgery = Box<dyn Fn(&mut serde_json::Value)>;

/// A manifest is believed only when it is what its key says and names only its own backup's
/// things: each forgery below is left out of listings (and named), and reading it is
/// `ManifestMalformed`, so no restore, drill or prune ever acts on it.
#[test]
fn a_forged_manifest_is_refused_before_it_is_believed() {
    let (catalog, _store) = memory_catalog("backups");
    let good = |id: &str| {
        let mut m = manifest("shop", id, day(1), BackupState::Completed);
        let key = catalog.dump_key("shop", id, "db:5432", "shop");
        m.databases.push(database_part("shop", &key, 10));
        m.instances.push(InstanceBackup {
            instance_id: "i-0123456789abcdef0".to_string(),
            availability_zone: "us-east-1a".to_string(),
            mode: InstanceBackupMode::Snapshots,
            state: BackupState::Completed,
            image_id: None,
            volumes: Vec::new(),
            error: None,
        });
        serde_json::to_value(m).unwrap()
    };
    let genuine = "20261101T000000Z-00000001";
    put_json(
        &catalog,
        &catalog.manifest_key("shop", genuine),
        &good(genuine),
    );
    let forgeries: Vec<(&str, Forgery)> = vec![
        (
            "another application's",
            Box::new(|m| m["application"] = json!("billing")),
        ),
        (
            "another backup's",
            Box::new(|m| m["backup_id"] = json!("20261101T000000Z-99999999")),
        ),
        (
            "a dump of another backup",
            Box::new(|m| {
                m["databases"][0]["artifact"]["key"] =
                    json!("backstop/shop/20261101T000000Z-00000001/db/db%3A5432/shop.dump")
            }),
        ),
        (
            "a dump outside the catalog",
            Box::new(|m| m["databases"][0]["artifact"]["key"] = json!("../../etc/passwd")),
        ),
        (
            "a wildcard instance",
            Box::new(|m| m["instances"][0]["instance_id"] = json!("i-*")),
        ),
        (
            "a wildcard snapshot",
            Box::new(|m| {
                m["instances"][0]["volumes"] = json!([{"device": "/dev/xvda", "boot": true,
                    "volume_id": "vol-0123456789abcdef0", "size_gib": 8, "volume_type": "gp3",
                    "iops": null, "throughput": null, "encrypted": false, "kms_key_id": null,
                    "snapshot_id": "snap-*"}])
            }),
        ),
        (
            "SQL in a privilege",
            Box::new(|m| {
                m["databases"][0]["properties"] = json!({"owner": "o", "encoding": "UTF8",
                    "collate": "C", "ctype": "C", "connection_limit": -1, "comment": null,
                    "privileges": [{"grantee": null, "privilege": "ALL ON DATABASE shop TO PUBLIC; --",
                                    "grantable": false, "grantor": "o"}],
                    "settings": []})
            }),
        ),
        (
            "SQL in a setting name",
            Box::new(|m| {
                m["databases"][0]["properties"] = json!({"owner": "o", "encoding": "UTF8",
                    "collate": "C", "ctype": "C", "connection_limit": -1, "comment": null,
                    "privileges": [],
                    "settings": [{"role": null, "name": "search_path TO x; DROP", "value": "v"}]})
            }),
        ),
    ];
    for (n, (what, forge)) in forgeries.iter().enumerate() {
        let id = format!("20261102T000000Z-{n:08x}");
        let mut m = good(&id);
        forge(&mut m);
        put_json(&catalog, &catalog.manifest_key("shop", &id), &m);
        let err = block_on(catalog.manifest("shop", &id)).unwrap_err();
        assert_eq!(err.error_type(), "ManifestMalformed", "{what}: {err}");
        let listing = block_on(catalog.list(Some("shop"))).unwrap();
        assert_eq!(ids(&listing.manifests), [genuine], "{what}");
        assert_eq!(listing.skipped.len(), 1, "{what}: {:?}", listing.skipped);
        block_on(catalog.store.delete(&catalog.manifest_key("shop", &id))).unwrap();
    }
}

#[test]
fn concurrent_parts_of_one_backup_all_land_in_its_manifest() {
    let (catalog, store) = memory_catalog("backups");
    let id = "20261125T150000Z-feedbeef";
    let instance = |n: usize, state: BackupState| InstanceBackup {
        instance_id: format!("i-{n:08x}"),
        availability_zone: "us-east-1a".to_string(),
        mode: InstanceBackupMode::Snapshots,
        image_id: None,
        state,
        volumes: Vec::new(),
        error: None,
    };
    // Sixteen targets at once (as the state machine's Map runs them): eight instances, one of
    // them still pending, and eight databases.
    let parts: Vec<Manifest> = (0..16)
        .map(|n| {
            let mut m = manifest("fleet", id, day(1), BackupState::Completed);
            if n % 2 == 0 {
                let state = if n == 4 {
                    BackupState::Pending
                } else {
                    BackupState::Completed
                };
                m.instances.push(instance(n, state));
            } else {
                m.databases.push(database_part(
                    &format!("db{n:02}"),
                    &format!("backstop/fleet/{id}/db/db{n:02}.dump"),
                    n as u64,
                ));
            }
            m
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let merged = rt.block_on(async {
        let catalog = Arc::new(catalog.clone());
        let tasks: Vec<_> = parts
            .into_iter()
            .map(|mine| {
                let catalog = catalog.clone();
                tokio::spawn(async move {
                    catalog
                        .update_manifest("fleet", id, |current| {
                            Ok(mine.clone().merged_into(current))
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        catalog.manifest("fleet", id).await.unwrap()
    });
    let mut instances: Vec<&str> = merged
        .instances
        .iter()
        .map(|i| i.instance_id.as_str())
        .collect();
    instances.sort();
    let want: Vec<String> = (0..16).step_by(2).map(|n| format!("i-{n:08x}")).collect();
    assert_eq!(instances, want, "no instance part lost");
    assert_eq!(merged.databases.len(), 8, "no database part lost");
    assert_eq!(
        merged.state,
        BackupState::Pending,
        "one instance is still pending"
    );
    assert_eq!(store.keys(), [catalog.manifest_key("fleet", id)]);

    // The pending instance completes (its part merged again: replaced, not doubled), then
    // another target fails: the backup is failed, with every part kept.
    let mut done = manifest("fleet", id, day(1), BackupState::Completed);
    done.instances.push(instance(4, BackupState::Completed));
    let m = rt
        .block_on(catalog.update_manifest("fleet", id, |c| Ok(done.clone().merged_into(c))))
        .unwrap();
    assert_eq!(m.state, BackupState::Completed);
    assert_eq!(m.instances.len(), 8);
    let mut failed = manifest("fleet", id, day(2), BackupState::Failed);
    failed.error = Some("DumpFailed: pg_dump failed".to_string());
    let m = rt
        .block_on(catalog.update_manifest("fleet", id, |c| Ok(failed.clone().merged_into(c))))
        .unwrap();
    assert_eq!(m.state, BackupState::Failed);
    assert_eq!(m.error.as_deref(), Some("DumpFailed: pg_dump failed"));
    assert_eq!((m.instances.len(), m.databases.len()), (8, 8));
    assert_eq!((m.started_at, m.finished_at), (day(1), day(2)));
}
