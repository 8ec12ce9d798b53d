//! Credentials from a Secrets Manager secret (the RDS JSON shape), served by moto: backup and
//! restore with `--database-secret`, and named errors for unusable secrets.

mod common;

use aws_sdk_secretsmanager::config::{Credentials, Region};
use common::{Bed, SHOP_SCHEMA};

fn secrets_client(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    let conf = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    aws_sdk_secretsmanager::Client::from_conf(conf)
}

#[test]
fn backup_and_restore_with_credentials_from_an_rds_shaped_secret() {
    let bed = Bed::start();
    bed.pg.create_db("app").unwrap();
    bed.pg.psql_script("app", SHOP_SCHEMA).unwrap();
    let original = bed.table_checksums("app");
    let secrets = secrets_client(&bed.moto.endpoint);
    let good = serde_json::json!({
        "engine": "postgres",
        "host": "127.0.0.1",
        "port": bed.pg.port,
        "username": bed.pg.user,
        "password": bed.pg.password,
        "dbname": "app",
    });
    for (name, value) in [
        ("prod/app/db", good.to_string()),
        (
            "prod/app/broken",
            serde_json::json!({"host": "127.0.0.1", "password": bed.pg.password}).to_string(),
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
    let b = bed.bucket.as_str();

    let run = bed.backstop(&[
        "db",
        "backup",
        "--bucket",
        b,
        "--database-secret",
        "prod/app/db",
        "--json",
    ]);
    assert!(run.ok, "{}", run.all());
    let manifest = run.json();
    let id = manifest["backup_id"].as_str().unwrap().to_string();
    assert_eq!(manifest["databases"][0]["database"], "app");
    assert!(!run.all().contains(&bed.pg.password));

    bed.pg.psql("app", "DELETE FROM orders").unwrap();
    let run = bed.backstop(&[
        "db",
        "restore",
        "--bucket",
        b,
        "--backup-id",
        &id,
        "--database-secret",
        "prod/app/db",
    ]);
    assert!(run.ok, "{}", run.all());
    assert_eq!(bed.table_checksums("app"), original);

    for (args, expected) in [
        (
            vec![
                "db",
                "backup",
                "--bucket",
                b,
                "--database-secret",
                "prod/app/broken",
            ],
            "missing field `username`",
        ),
        (
            vec![
                "db",
                "backup",
                "--bucket",
                b,
                "--database-secret",
                "no/such/secret",
            ],
            "no/such/secret",
        ),
    ] {
        let run = bed.backstop(&args);
        assert!(!run.ok);
        assert!(
            run.stderr.contains("error: SecretUnusable:") && run.stderr.contains(expected),
            "{}",
            run.stderr
        );
        assert!(!run.all().contains(&bed.pg.password));
    }
    assert_eq!(bed.manifests().len(), 1, "the bad secrets wrote nothing");
}
