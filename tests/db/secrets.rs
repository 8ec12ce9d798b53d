//! Credentials from a Secrets Manager secret (the RDS JSON shape), served by moto: backup and
//! restore with `--database-secret`, and named errors for unusable secrets.

use crate::support::{Bed, SHOP_SCHEMA};

#[test]
fn backup_and_restore_with_credentials_from_an_rds_shaped_secret() {
    let bed = Bed::new().database("app", SHOP_SCHEMA).moto().build();
    let cli = bed.cli();
    let pg = bed.pg();
    let original = bed.table_checksums("app");
    let secrets = bed.secrets();
    let good = serde_json::json!({
        "engine": "postgres",
        "host": "127.0.0.1",
        "port": pg.port,
        "username": pg.user,
        "password": pg.password,
        "dbname": "app",
    });
    for (name, value) in [
        ("prod/app/db", good.to_string()),
        (
            "prod/app/broken",
            serde_json::json!({"host": "127.0.0.1", "password": pg.password}).to_string(),
        ),
    ] {
        bed.rt
            .block_on(
                secrets
                    .create_secret()
                    .name(name)
                    .secret_string(value)
                    .send(),
            )
            .unwrap();
    }

    let run = cli.catalog(&["db", "backup", "--database-secret", "prod/app/db", "--json"]);
    assert!(run.ok, "{}", run.all());
    let manifest = run.json();
    let id = manifest["backup_id"].as_str().unwrap().to_string();
    assert_eq!(manifest["databases"][0]["database"], "app");
    assert!(!run.all().contains(&pg.password));

    pg.psql("app", "DELETE FROM orders").unwrap();
    let run = cli.catalog(&[
        "db",
        "restore",
        "--backup-id",
        &id,
        "--database-secret",
        "prod/app/db",
    ]);
    assert!(run.ok, "{}", run.all());
    assert_eq!(bed.table_checksums("app"), original);

    for (secret, expected) in [
        ("prod/app/broken", "missing field `username`"),
        ("no/such/secret", "no/such/secret"),
    ] {
        let run = cli.catalog(&["db", "backup", "--database-secret", secret]);
        assert!(!run.ok);
        assert!(
            run.stderr.contains("error: SecretUnusable:") && run.stderr.contains(expected),
            "{}",
            run.stderr
        );
        assert!(!run.all().contains(&pg.password));
    }
    assert_eq!(bed.manifests().len(), 1, "the bad secrets wrote nothing");
}
