//! Round trip: back up a realistic schema, damage it with a destructive migration, restore in
//! each mode, and compare every table's ordered content with the original.

use crate::support::{Bed, TempFile, DESTRUCTIVE_MIGRATION, SHOP_SCHEMA};

#[test]
fn backup_damage_restore_in_both_modes_brings_every_table_back() {
    let bed = Bed::new().database("shop", SHOP_SCHEMA).moto().build();
    let cli = bed.cli();
    let pg = bed.pg();
    let original = bed.table_checksums("shop");
    assert_eq!(original.len(), 3);
    let seq_before = pg
        .psql("shop", "SELECT last_value FROM invoice_no")
        .unwrap();

    let id = cli.db_backup(
        "shop",
        &["--application", "shop", "--app-version", "abc123"],
    );

    // The manifest records what the issue asks for.
    let m = cli.backups_show(&id);
    assert_eq!(m["format_version"], 1);
    assert_eq!(m["state"], "completed");
    assert_eq!(m["application"], "shop");
    assert_eq!(m["app_version"], "abc123");
    let db = &m["databases"][0];
    assert_eq!(db["database"], "shop");
    assert!(db["server_version"]
        .as_str()
        .unwrap()
        .starts_with(|c: char| c.is_ascii_digit()));
    assert!(!db["pg_dump_version"].as_str().unwrap().is_empty());
    // pg_dump -Z0, compressed by Backstop's multithreaded zstd on its way to S3.
    assert_eq!(db["compression"], "stream-zstd:1");
    assert_eq!(db["artifact"]["sha256"].as_str().unwrap().len(), 64);
    let rows: Vec<(String, i64)> = db["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_string(),
                t["rows"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("customers".into(), 500),
            ("orders".into(), 4000),
            ("products".into(), 200)
        ]
    );
    // The dump object is exactly what the manifest says.
    let key = db["artifact"]["key"].as_str().unwrap().to_string();
    // Under the server and the database: two servers' databases of one name never share it.
    assert_eq!(
        key,
        format!(
            "backstop/shop/{id}/db/127.0.0.1%3A{}/shop.dump",
            bed.pg().port
        )
    );
    let body = bed.get(&key);
    assert_eq!(body.len() as u64, db["artifact"]["bytes"].as_u64().unwrap());
    assert!(
        body.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
        "one zstd frame"
    );
    // Readable by hand, as the README says: `zstd -d | pg_restore`.
    let by_hand = TempFile::new("dump");
    std::fs::write(&by_hand.0, &body).unwrap();
    let listed = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc '{}' | '{}' --list",
            by_hand.path(),
            pg.bin_dir().join("pg_restore").display()
        ))
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("TABLE DATA public orders"),
        "a custom-format archive inside"
    );

    let list = cli.catalog(&["backups", "list"]);
    assert!(
        list.ok && list.stdout.contains(&id) && list.stdout.contains("abc123"),
        "{}",
        list.all()
    );

    let verify = cli.db_verify(
        &id,
        &["--restore-test", "--database-url", &pg.url("postgres")],
    );
    assert!(verify.ok, "{}", verify.all());
    assert!(
        verify.stdout.contains("restore test: 3 tables match"),
        "{}",
        verify.stdout
    );
    assert!(
        bed.databases_named("backstop_verify").is_empty(),
        "scratch dropped"
    );

    // swap: the damaged database is kept for forensics, the original content is back.
    pg.psql_script("shop", DESTRUCTIVE_MIGRATION).unwrap();
    assert_ne!(bed.table_checksums("shop"), original);
    let restore = cli.db_restore(&id, "shop", &["--json"]);
    assert!(restore.ok, "{}", restore.all());
    let report = restore.json();
    let kept = report["failed_state_database"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(kept.starts_with("shop_failed_"), "{kept}");
    // Marked as Backstop's, so that prune (and only prune of what carries the mark) drops it.
    let mark = pg
        .psql(
            "postgres",
            &format!("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{kept}'"),
        )
        .unwrap();
    assert!(
        mark.starts_with(&format!(
            "backstop:failed-state of shop at {} UTC, kept by the swap restore of backup {id}",
            &kept["shop_failed_".len()..]
        )),
        "{mark}"
    );
    assert_eq!(
        pg.psql("postgres", "SELECT coalesce(shobj_description(oid, 'pg_database'), '-') FROM pg_database WHERE datname = 'shop'")
            .unwrap(),
        "-",
        "the restored database carries no mark"
    );
    assert_eq!(bed.table_checksums("shop"), original);
    assert_eq!(
        pg.psql("shop", "SELECT last_value FROM invoice_no")
            .unwrap(),
        seq_before
    );
    assert_eq!(
        pg.psql("shop", "SELECT count(*) FROM customer_totals")
            .unwrap(),
        "500",
        "view and function are back"
    );
    assert_eq!(
        pg.psql(
            "shop",
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_customer_idx'"
        )
        .unwrap(),
        "1"
    );
    assert_eq!(
        pg.psql(&kept, "SELECT count(*) FROM shiny_new_feature")
            .unwrap(),
        "0",
        "the failed state is kept as it was"
    );
    assert!(
        !bed.databases().iter().any(|d| d.contains("_restore_")),
        "no scratch left"
    );

    // in-place: a forensic dump first, then all-or-nothing pg_restore --clean.
    pg.psql_script("shop", DESTRUCTIVE_MIGRATION).unwrap();
    let restore = cli.db_restore(&id, "shop", &["--mode", "in-place", "--json"]);
    assert!(restore.ok, "{}", restore.all());
    let report = restore.json();
    let forensic = report["forensic_backup_id"].as_str().unwrap().to_string();
    assert_eq!(
        report["tables_not_in_backup"][0],
        "public.shiny_new_feature"
    );
    let mut restored = bed.table_checksums("shop");
    restored.retain(|(t, _)| t != "public.shiny_new_feature");
    assert_eq!(restored, original);
    assert_eq!(
        pg.psql("shop", "SELECT last_value FROM invoice_no")
            .unwrap(),
        seq_before
    );
    let forensic_manifest = cli.backups_show(&forensic);
    assert_eq!(forensic_manifest["purpose"]["kind"], "forensic");
    assert_eq!(forensic_manifest["purpose"]["restore_of"], id.as_str());
    assert_eq!(forensic_manifest["state"], "completed");
    assert_eq!(bed.open_multipart_uploads(), 0);

    // A dump compressed inside the archive by pg_dump (what backups before Backstop's own
    // zstd hold) restores as before.
    pg.psql("shop", "DROP TABLE shiny_new_feature").unwrap();
    let gzip = cli.db_backup("shop", &["--compression", "gzip"]);
    assert_eq!(
        cli.backups_show(&gzip)["databases"][0]["compression"],
        "gzip:6"
    );
    pg.psql_script("shop", DESTRUCTIVE_MIGRATION).unwrap();
    let restore = cli.db_restore(&gzip, "shop", &["--json"]);
    assert!(restore.ok, "{}", restore.all());
    assert_eq!(bed.table_checksums("shop"), original);
}
