//! A server that refuses plaintext (as RDS does with `rds.force_ssl`): backup, verify and
//! restore over TLS with libpq's sslmode meanings, and named errors when TLS is off or the
//! certificate cannot be trusted.

use crate::support::{Bed, Run, SHOP_SCHEMA};

/// A backup refused because the server's certificate cannot be trusted, before anything was
/// written.
fn refused_on_the_certificate(bed: &Bed, run: &Run) {
    assert!(!run.ok);
    assert!(
        run.stderr.contains("error: DatabaseError:")
            && run.stderr.to_lowercase().contains("certificate"),
        "{}",
        run.stderr
    );
    assert!(bed.keys().is_empty(), "nothing written: {:?}", bed.keys());
}

#[test]
fn backup_and_restore_over_tls_with_sslmode_semantics() {
    let bed = Bed::new()
        .tls_only()
        .database("app", SHOP_SCHEMA)
        .moto()
        .build();
    let cli = bed.cli();
    let original = bed.table_checksums("app");
    let ca = bed.pg().ca_cert().unwrap();
    let url = bed.pg().url("app");
    let verified = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());

    // Plaintext is refused by the server, and said so.
    let run = cli.catalog(&[
        "db",
        "backup",
        "--database-url",
        &format!("{url}?sslmode=disable"),
    ]);
    assert!(!run.ok);
    assert!(
        run.stderr.contains("error: DatabaseError:") && run.stderr.contains("no encryption"),
        "{}",
        run.stderr
    );

    // Full verification against a root the system does not know fails on the certificate.
    let run = cli.catalog(&[
        "db",
        "backup",
        "--database-url",
        &format!("{url}?sslmode=verify-full"),
    ]);
    refused_on_the_certificate(&bed, &run);

    // libpq's default (prefer) negotiates TLS; verify-full with the right root works end to end.
    let id = cli.db_backup("app", &[]);
    let run = cli.catalog(&["db", "backup", "--database-url", &verified]);
    assert!(run.ok, "{}", run.all());
    let run = cli.db_verify(&id, &["--restore-test", "--database-url", &verified]);
    assert!(run.ok, "{}", run.all());
    bed.pg().psql("app", "DELETE FROM orders").unwrap();
    let run = cli.catalog(&[
        "db",
        "restore",
        "--backup-id",
        &id,
        "--database-url",
        &verified,
    ]);
    assert!(run.ok, "{}", run.all());
    assert_eq!(bed.table_checksums("app"), original);
}

/// A secret in the RDS shape says nothing of TLS: the operator's sslmode and CA bundle
/// (`--sslmode`/`--sslrootcert`, `DatabaseSslMode`/`DatabaseSslRootCert` in the template)
/// decide how its server is reached, and verify-full refuses a certificate it cannot trust.
#[test]
fn a_secrets_server_is_verified_with_the_operators_sslmode_and_bundle() {
    let bed = Bed::new()
        .tls_only()
        .database("app", SHOP_SCHEMA)
        .moto()
        .build();
    let cli = bed.cli();
    let pg = bed.pg();
    let secret = serde_json::json!({
        "engine": "postgres", "host": "127.0.0.1", "port": pg.port,
        "username": pg.user, "password": pg.password, "dbname": "app",
    });
    bed.rt
        .block_on(
            bed.secrets()
                .create_secret()
                .name("prod/app/db")
                .secret_string(secret.to_string())
                .send(),
        )
        .unwrap();
    let backup = |extra: &[&str]| {
        let mut args = vec!["db", "backup", "--database-secret", "prod/app/db"];
        args.extend_from_slice(extra);
        cli.catalog(&args)
    };
    // Without a CA bundle the system's roots do not know this server: refused, nothing written.
    let run = backup(&["--sslmode", "verify-full"]);
    refused_on_the_certificate(&bed, &run);
    let run = backup(&["--sslmode", "sometimes"]);
    assert!(!run.ok);
    assert!(
        run.stderr.contains("error: InvalidInput:"),
        "{}",
        run.stderr
    );
    // With the bundle, verified end to end (the session and pg_dump alike).
    let ca = pg.ca_cert().unwrap();
    let run = backup(&[
        "--sslmode",
        "verify-full",
        "--sslrootcert",
        ca.to_str().unwrap(),
    ]);
    assert!(run.ok, "{}", run.all());
}
