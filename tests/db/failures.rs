//! Failure paths of `backstop db …`: every one ends in a named error, a non-zero exit, no good
//! manifest, no open multipart upload and an untouched database. S3 failures come from the
//! bed's fault proxy in front of moto, `pg_dump` failures from stand-in tools.

use backstop_testbed::Fault;

use backstop_core::db::backup::CLEANUP_RESERVE;

use crate::support::{Bed, BIG_TABLE, SHOP_SCHEMA};

/// A proxy in front of moto answering 500 to every request whose target contains `matching`,
/// after the first `after` of them.
fn failing_s3(matching: &str, after: usize) -> Fault {
    Fault::FailAfter {
        matching: matching.into(),
        after,
        status: 500,
    }
}

fn no_completed_manifest(bed: &Bed) {
    for m in bed.manifests() {
        assert_ne!(
            m["state"], "completed",
            "a failed backup left a good manifest: {m}"
        );
    }
}

#[test]
fn s3_failing_mid_upload_aborts_the_upload_and_leaves_no_good_manifest() {
    let bed = Bed::new()
        .database("app", BIG_TABLE)
        .fault_proxy(failing_s3("partNumber=", 2))
        .build();
    let cli = bed.cli();
    let url = bed.pg().url("app");
    let run = cli.clone().at(&bed.proxy().endpoint).catalog(&[
        "db",
        "backup",
        "--database-url",
        &url,
        "--compression",
        "none",
    ]);
    assert!(!run.ok, "backup must fail: {}", run.all());
    assert!(
        run.stderr.contains("error: StorageError: S3 UploadPart"),
        "{}",
        run.stderr
    );
    assert!(bed.proxy().injected() >= 1);
    assert_eq!(
        bed.open_multipart_uploads(),
        0,
        "the multipart upload was aborted"
    );
    assert!(
        !bed.keys().iter().any(|k| k.ends_with(".dump")),
        "no dump object"
    );
    no_completed_manifest(&bed);
    let failed = bed.manifests();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["error"]
        .as_str()
        .unwrap()
        .starts_with("StorageError"));
    // The failed backup is listed as failed and cannot be restored.
    let id = failed[0]["backup_id"].as_str().unwrap();
    let restore = cli.db_restore(id, "app", &[]);
    assert!(
        !restore.ok && restore.stderr.contains("BackupNotUsable"),
        "{}",
        restore.all()
    );
}

#[test]
fn pg_dump_failing_gives_a_named_error_and_no_good_manifest() {
    let bed = Bed::new().database("app", BIG_TABLE).moto().build();
    let cli = bed.cli();

    // A database that does not exist: refused before anything is uploaded.
    let run = cli.catalog(&["db", "backup", "--database-url", &cli.url("no_such_db")]);
    assert!(!run.ok);
    assert!(
        run.stderr.contains("error: DatabaseError:") && run.stderr.contains("no_such_db"),
        "{}",
        run.stderr
    );
    assert!(bed.keys().is_empty(), "nothing written: {:?}", bed.keys());

    // pg_dump killed midway, after it has streamed part of the archive.
    let fake = bed.fake_pg_dump("head -c 9000000\nkill -9 $$");
    let run = cli.clone().tools(&fake.0).catalog(&[
        "db",
        "backup",
        "--database-url",
        &cli.url("app"),
        "--compression",
        "none",
    ]);
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("error: DumpFailed: pg_dump failed: killed by signal 9"),
        "{}",
        run.stderr
    );
    assert_eq!(bed.open_multipart_uploads(), 0);
    assert!(!bed.keys().iter().any(|k| k.ends_with(".dump")));
    no_completed_manifest(&bed);
}

#[test]
fn a_corrupted_object_is_refused_by_verify_and_restore_and_the_target_is_unchanged() {
    let bed = Bed::new()
        .database("app", &format!("{SHOP_SCHEMA}\n{BIG_TABLE}"))
        .moto()
        .build();
    let cli = bed.cli();
    let id = cli.db_backup("app", &["--compression", "none"]);
    let key = bed.dump_key(&id);
    let mut body = bed.get(&key);
    let mid = body.len() * 3 / 4;
    body[mid] ^= 0x5a;
    bed.put(&key, body);
    // The damage a failed deploy did, which a refused restore must leave exactly as it is.
    bed.pg()
        .psql("app", "DELETE FROM orders WHERE id > 10")
        .unwrap();
    let before = bed.table_checksums("app");
    let dbs_before = bed.databases();

    let verify = cli.db_verify(&id, &["--json"]);
    assert!(!verify.ok);
    assert_eq!(
        verify.json()["error"]["type"],
        "ChecksumMismatch",
        "{}",
        verify.all()
    );

    for mode in ["swap", "in-place"] {
        let run = cli.db_restore(&id, "app", &["--mode", mode, "--no-forensic-dump"]);
        assert!(!run.ok, "{mode}: {}", run.all());
        assert!(
            run.stderr.contains("error: ChecksumMismatch:"),
            "{mode}: {}",
            run.stderr
        );
        assert_eq!(
            bed.table_checksums("app"),
            before,
            "{mode} left the target unchanged"
        );
        assert_eq!(
            bed.databases(),
            dbs_before,
            "{mode} left no scratch database"
        );
    }

    // A truncated object is refused on size before anything runs.
    let mut body = bed.get(&key);
    body.truncate(body.len() - 1);
    bed.put(&key, body);
    let run = cli.db_restore(&id, "app", &[]);
    assert!(
        run.stderr.contains("error: SizeMismatch:"),
        "{}",
        run.stderr
    );
    assert_eq!(bed.table_checksums("app"), before);
}

#[test]
fn bad_input_gives_named_errors_and_no_side_effects() {
    let bed = Bed::new().database("app", SHOP_SCHEMA).moto().build();
    let cli = bed.cli();
    let id = cli.db_backup("app", &["--application", "shop"]);
    let url = cli.url("app");
    let before = bed.table_checksums("app");
    let keys_before = bed.keys();
    let missing = "20990101T000000Z-deadbeef";

    // (bucket, arguments, error): `None` is the bed's bucket.
    let cases: Vec<(Option<&str>, Vec<&str>, &str)> = vec![
        (
            None,
            vec!["backups", "show", "--backup-id", missing],
            "BackupNotFound",
        ),
        (
            None,
            vec![
                "db",
                "restore",
                "--backup-id",
                missing,
                "--database-url",
                &url,
            ],
            "BackupNotFound",
        ),
        (
            None,
            vec!["db", "verify", "--backup-id", "../../etc"],
            "InvalidInput",
        ),
        (
            Some("no-such-bucket"),
            vec!["backups", "list"],
            "BucketNotFound",
        ),
        (
            Some("no-such-bucket"),
            vec!["db", "backup", "--database-url", &url],
            "BucketNotFound",
        ),
        (
            Some("no-such-bucket"),
            vec!["db", "restore", "--backup-id", &id, "--database-url", &url],
            "BucketNotFound",
        ),
        (
            None,
            vec![
                "db",
                "backup",
                "--database-url",
                "mysql://u:p@127.0.0.1/app",
            ],
            "InvalidInput",
        ),
        (
            None,
            vec!["db", "backup", "--database-url", "postgres://127.0.0.1"],
            "InvalidInput",
        ),
        (None, vec!["db", "backup"], "InvalidInput"),
        (
            None,
            vec![
                "db",
                "backup",
                "--database-url",
                &url,
                "--application",
                "a/b",
            ],
            "InvalidInput",
        ),
        (
            None,
            vec![
                "db",
                "backup",
                "--database-url",
                &url,
                "--compression",
                "lz9",
            ],
            "InvalidInput",
        ),
        (
            None,
            vec![
                "db",
                "restore",
                "--backup-id",
                &id,
                "--database-url",
                &url,
                "--mode",
                "sideways",
            ],
            "InvalidInput",
        ),
    ];
    for (bucket, args, expected) in &cases {
        let mut args = args.clone();
        match bucket {
            Some(b) => args.extend(["--bucket", b]),
            None => args = cli.in_catalog(&args),
        }
        let mut with_json = args.clone();
        with_json.push("--json");
        let run = cli.run(&with_json);
        assert!(!run.ok, "{args:?} must fail");
        assert_eq!(
            run.json()["error"]["type"],
            *expected,
            "{args:?}: {}",
            run.all()
        );
        let run = cli.run(&args);
        assert!(
            run.stderr.contains(&format!("error: {expected}:")),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert_eq!(bed.keys(), keys_before, "no object written or removed");
    assert_eq!(bed.table_checksums("app"), before, "database untouched");

    // A malformed manifest is named, for show and restore, and restore touches nothing; a
    // listing leaves it out and names it.
    let key = format!("backstop/shop/{id}/manifest.json");
    bed.put(&key, b"{\"format_version\": 1, \"backup_id\": 42".to_vec());
    let listed = cli.catalog(&["backups", "list"]);
    assert!(listed.ok, "{}", listed.all());
    assert!(
        listed.stderr.contains("skipped: manifest") && listed.stderr.contains(&key),
        "{}",
        listed.all()
    );
    for args in [
        vec!["backups", "show", "--backup-id", &id],
        vec!["db", "restore", "--backup-id", &id, "--database-url", &url],
    ] {
        let run = cli.catalog(&args);
        assert!(!run.ok);
        assert!(
            run.stderr.contains("error: ManifestMalformed:") && run.stderr.contains(&key),
            "{args:?}: {}",
            run.stderr
        );
    }
    bed.put(&key, br#"{"format_version": 99}"#.to_vec());
    let run = cli.catalog(&["backups", "show", "--backup-id", &id]);
    assert!(
        run.stderr.contains("format_version 99 is not supported"),
        "{}",
        run.stderr
    );
    assert_eq!(bed.table_checksums("app"), before);
    assert_eq!(
        bed.databases().len(),
        4,
        "postgres, template0, template1, app"
    );
}

#[test]
fn the_password_never_appears_in_any_output_log_or_error() {
    let bed = Bed::new().database("app", SHOP_SCHEMA).moto().build();
    let cli = bed.cli();
    let verbose = cli.clone().verbose();
    let password = bed.pg().password.clone();
    let url = cli.url("app");
    let wrong_password = "Wr0ngPassw0rdThatMustNotLeak";
    let wrong_url = url.replace(&password, wrong_password);
    assert_ne!(url, wrong_url);

    let id = cli.db_backup("app", &[]);
    let mut runs = Vec::new();
    for json in [false, true] {
        let mut all: Vec<Vec<&str>> = vec![
            vec!["db", "backup", "--database-url", &url],
            vec!["db", "backup", "--database-url", &wrong_url],
            vec![
                "db",
                "verify",
                "--backup-id",
                &id,
                "--restore-test",
                "--database-url",
                &url,
            ],
            vec![
                "db",
                "verify",
                "--backup-id",
                &id,
                "--restore-test",
                "--database-url",
                &wrong_url,
            ],
            vec!["db", "restore", "--backup-id", &id, "--database-url", &url],
            vec![
                "db",
                "restore",
                "--backup-id",
                &id,
                "--database-url",
                &url,
                "--mode",
                "in-place",
            ],
            vec![
                "db",
                "restore",
                "--backup-id",
                &id,
                "--database-url",
                &wrong_url,
            ],
            vec!["backups", "list"],
            vec!["backups", "show", "--backup-id", &id],
        ];
        if json {
            all.iter_mut().for_each(|a| a.push("--json"));
        }
        for args in all {
            // With debug logging on.
            let run = verbose.catalog(&args);
            runs.push((args.join(" "), run.ok, run.all()));
        }
    }
    let failures = runs.iter().filter(|(_, ok, _)| !ok).count();
    assert_eq!(
        failures, 6,
        "the wrong-password runs fail, the others succeed"
    );
    for (args, _, output) in &runs {
        assert!(
            !output.contains(&password),
            "password leaked by `{args}`:\n{output}"
        );
        assert!(
            !output.contains(wrong_password),
            "wrong password leaked by `{args}`:\n{output}"
        );
    }
    assert!(runs
        .iter()
        .any(|(_, _, o)| o.contains("password authentication failed")));
    for m in bed.manifests() {
        let text = m.to_string();
        assert!(
            !text.contains(&password) && !text.contains(wrong_password),
            "{text}"
        );
    }
}

#[test]
fn a_timeout_or_a_cancel_stops_the_backup_and_aborts_the_upload() {
    let bed = Bed::new().database("app", BIG_TABLE).moto().build();
    // A pg_dump that streams ~9 MB of the real archive and then stalls with its stdout open.
    let fake = bed.fake_pg_dump("{ head -c 9000000; exec sleep 20; }");
    let cli = bed.cli().tools(&fake.0);
    let url = cli.url("app");
    let args = cli.in_catalog(&[
        "db",
        "backup",
        "--database-url",
        &url,
        "--compression",
        "none",
    ]);

    let mut with_timeout = args.clone();
    with_timeout.extend(["--timeout", "3"]);
    let run = cli.run(&with_timeout);
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("error: TimedOut: backup timed out after 3 s"),
        "{}",
        run.stderr
    );
    assert_eq!(bed.open_multipart_uploads(), 0);
    no_completed_manifest(&bed);

    // Ctrl-C while parts are uploading.
    let child = cli
        .command(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while bed.open_multipart_uploads() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("error: Cancelled: backup was cancelled"),
        "{stderr}"
    );
    assert_eq!(bed.open_multipart_uploads(), 0);
    assert!(!bed.keys().iter().any(|k| k.ends_with(".dump")));
    no_completed_manifest(&bed);
    let errors: Vec<String> = bed
        .manifests()
        .iter()
        .map(|m| {
            m["error"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(errors.len(), 2);
    assert!(
        errors.contains(&"TimedOut".to_string()) && errors.contains(&"Cancelled".to_string()),
        "{errors:?}"
    );
}

#[test]
fn a_backup_from_a_newer_major_version_is_refused_before_anything_is_touched() {
    let bed = Bed::new().database("app", SHOP_SCHEMA).moto().build();
    let cli = bed.cli();
    let id = cli.db_backup("app", &["--application", "shop"]);
    let key = format!("backstop/shop/{id}/manifest.json");
    let mut manifest = bed.get_json(&key);
    manifest["databases"][0]["server_version_num"] = serde_json::json!(990001);
    bed.put(&key, serde_json::to_vec(&manifest).unwrap());
    bed.pg().psql("app", "DELETE FROM orders").unwrap();
    let before = bed.table_checksums("app");
    let dbs = bed.databases();
    for mode in ["swap", "in-place"] {
        let run = cli.db_restore(&id, "app", &["--mode", mode]);
        assert!(!run.ok);
        assert!(
            run.stderr
                .contains("error: IncompatibleServerVersion: the backup comes from PostgreSQL 99"),
            "{}",
            run.stderr
        );
        assert_eq!(bed.table_checksums("app"), before);
        assert_eq!(bed.databases(), dbs);
    }
    assert_eq!(bed.manifests().len(), 1, "no forensic dump was taken");
}

#[test]
fn a_manifest_that_cannot_be_written_leaves_no_dump_behind() {
    // The first manifest request is the read before the conditional write; the write fails.
    let bed = Bed::new()
        .database("app", SHOP_SCHEMA)
        .fault_proxy(failing_s3("manifest.json", 1))
        .build();
    let cli = bed.cli();
    let run = cli.clone().at(&bed.proxy().endpoint).catalog(&[
        "db",
        "backup",
        "--database-url",
        &cli.url("app"),
    ]);
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("error: StorageError: S3 PutObject")
            && run.stderr.contains("manifest.json"),
        "{}",
        run.stderr
    );
    assert!(bed.proxy().injected() >= 1);
    assert!(
        bed.keys().is_empty(),
        "dump removed, nothing else written: {:?}",
        bed.keys()
    );
    assert_eq!(bed.open_multipart_uploads(), 0);
}

#[test]
fn a_swap_restore_that_its_deadline_stops_leaves_the_target_as_it_was_and_no_scratch_database() {
    use backstop_core::db::restore::{restore_database, RestoreMode, RestoreRequest};
    use backstop_core::db::target::DbTarget;
    use backstop_core::progress::Quiet;
    use std::time::{Duration, Instant};

    let bed = Bed::new()
        .database("app", &format!("{SHOP_SCHEMA}\n{BIG_TABLE}"))
        .moto()
        .build();
    let id = bed.cli().db_backup("app", &["--compression", "none"]);
    // The damage a failed deploy did: a restore that cannot finish must leave it exactly.
    bed.pg()
        .psql("app", "DELETE FROM orders WHERE id > 10")
        .unwrap();
    let before = bed.table_checksums("app");
    let dbs_before = bed.databases();
    let ctx = bed.context(bed.config());
    let target = DbTarget::from_url(&bed.pg().url("app")).unwrap();
    let req = RestoreRequest::new(&id, RestoreMode::Swap);
    // Too little time left to start (under the cleanup reserve), and then enough to start but
    // not to finish restoring 300,000 rows: each stops before the deadline.
    for left in [
        Duration::from_secs(30),
        CLEANUP_RESERVE + Duration::from_millis(300),
    ] {
        let deadline = Instant::now() + left;
        let restore = restore_database(
            ctx.catalog(),
            &ctx.tools,
            &target,
            &req,
            &Quiet,
            std::future::pending(),
        );
        let err = bed
            .rt
            .block_on(backstop_core::deadline::within(deadline, restore))
            .unwrap_err();
        assert!(Instant::now() < deadline, "stopped before the deadline");
        assert_eq!(err.error_type(), "TimedOut", "{left:?}: {err}");
        assert_eq!(
            bed.table_checksums("app"),
            before,
            "{left:?}: target unchanged"
        );
        assert_eq!(
            bed.databases(),
            dbs_before,
            "{left:?}: no scratch database left"
        );
        // The target still takes connections.
        bed.pg().psql("app", "SELECT 1").unwrap();
    }
}

/// S3 that accepts a part and never answers: every AWS call has explicit bounds (here the
/// attempt shortened to 2 s), so the backup fails with a named error within them, aborts its
/// upload and leaves no good manifest, instead of hanging until the function is killed.
#[test]
fn a_stalled_s3_connection_times_out_into_a_named_error() {
    let bed = Bed::new()
        .database("app", BIG_TABLE)
        .fault_proxy(Fault::Stall {
            matching: "partNumber=".into(),
        })
        .build();
    let cli = bed
        .cli()
        .at(&bed.proxy().endpoint)
        .with_env("BACKSTOP_AWS_ATTEMPT_TIMEOUT_SECONDS", "2");
    let url = bed.pg().url("app");
    let mut child = cli
        .command(&cli.in_catalog(&[
            "db",
            "backup",
            "--database-url",
            &url,
            "--compression",
            "none",
        ]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A watchdog, not a measurement: without bounds the call would wait forever.
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(240) {
            let _ = child.kill();
            panic!("the backup still waits on a stalled connection after 240 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("error: StorageError: S3 UploadPart")
            && stderr.to_lowercase().contains("timeout"),
        "{stderr}"
    );
    assert!(bed.proxy().injected() >= 1);
    assert_eq!(bed.open_multipart_uploads(), 0, "the upload was aborted");
    no_completed_manifest(&bed);
}
