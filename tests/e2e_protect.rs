//! The protected deploy end to end: `backstop local` (moto executing the real
//! `statemachine/protect.asl.json`, the project's functions served on its Lambda port), a
//! throwaway PostgreSQL, an instance in moto, and `backstop run` driving one execution.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, InstanceType};
use common::{Bed, Run, DESTRUCTIVE_MIGRATION, SHOP_SCHEMA};
use serde_json::{json, Value};

/// A running `backstop local`, stopped (SIGTERM, which stops its moto) on drop.
struct Local {
    child: Child,
    info: Value,
}

impl Local {
    fn start(bed: &Bed, envs: &[(&str, String)], functions: &[(&str, String)]) -> Local {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backstop"));
        cmd.arg("local")
            .env("PG_BIN_DIR", bed.pg.bin_dir())
            .env_remove("BACKSTOP_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        for (name, command) in functions {
            cmd.arg("--function").arg(format!("{name}={command}"));
        }
        let mut child = cmd.spawn().expect("backstop local starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let info: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("backstop local printed {line:?}: {e}"));
        Local { child, info }
    }

    fn endpoint(&self) -> String {
        self.info["endpoint"].as_str().unwrap().to_string()
    }

    /// `backstop run --json` of `doc`; the outcome JSON.
    fn run(&self, doc: &Value) -> (Run, Value) {
        let path = std::env::temp_dir().join(format!(
            "backstop-run-{}-{}.json",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::write(&path, doc.to_string()).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backstop"));
        cmd.args(["run", "--json", "--input"])
            .arg(&path)
            .env(
                "BACKSTOP_STATE_MACHINE_ARN",
                self.info["state_machine_arn"].as_str().unwrap(),
            )
            .env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("BACKSTOP_LOG");
        let run = Run::of(cmd);
        let _ = std::fs::remove_file(&path);
        // On failure stdout holds the outcome, then the error object.
        let outcome = serde_json::Deserializer::from_str(&run.stdout)
            .into_iter::<Value>()
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("no outcome: {}", run.all()));
        (run, outcome)
    }

    fn ec2(&self, rt: &tokio::runtime::Runtime) -> aws_sdk_ec2::Client {
        let _guard = rt.enter();
        let conf = aws_sdk_ec2::Config::builder()
            .endpoint_url(self.endpoint())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .behavior_version_latest()
            .build();
        aws_sdk_ec2::Client::from_conf(conf)
    }

    fn manifest(&self, id: &str) -> Value {
        let s3 = common::s3_client(&self.endpoint());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let out = rt
            .block_on(
                s3.get_object()
                    .bucket("backstop-local")
                    .key(format!("backstop/shop/{id}/manifest.json"))
                    .send(),
            )
            .expect("the manifest exists");
        let body = rt.block_on(out.body.collect()).unwrap().to_vec();
        serde_json::from_slice(&body).unwrap()
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// An instance with a root and a data volume; its id.
fn instance(rt: &tokio::runtime::Runtime, ec2: &aws_sdk_ec2::Client) -> String {
    let ebs = |size| EbsBlockDevice::builder().volume_size(size).build();
    let out = rt
        .block_on(
            ec2.run_instances()
                .image_id("ami-03cf127a")
                .instance_type(InstanceType::T3Micro)
                .min_count(1)
                .max_count(1)
                .block_device_mappings(
                    BlockDeviceMapping::builder()
                        .device_name("/dev/sda1")
                        .ebs(ebs(8))
                        .build(),
                )
                .block_device_mappings(
                    BlockDeviceMapping::builder()
                        .device_name("/dev/sdf")
                        .ebs(ebs(20))
                        .build(),
                )
                .send(),
        )
        .unwrap();
    out.instances()[0].instance_id().unwrap().to_string()
}

/// Device → (volume id, the snapshot it was created from).
fn devices(
    rt: &tokio::runtime::Runtime,
    ec2: &aws_sdk_ec2::Client,
    id: &str,
) -> Vec<(String, String, Option<String>)> {
    let out = rt
        .block_on(ec2.describe_instances().instance_ids(id).send())
        .unwrap();
    let inst = &out.reservations()[0].instances()[0];
    inst.block_device_mappings()
        .iter()
        .map(|m| {
            let vol = m.ebs().unwrap().volume_id().unwrap().to_string();
            let described = rt
                .block_on(ec2.describe_volumes().volume_ids(&vol).send())
                .unwrap();
            let snap = described.volumes()[0].snapshot_id().map(str::to_string);
            (m.device_name().unwrap().to_string(), vol, snap)
        })
        .collect()
}

fn shop_bed() -> Bed {
    let bed = Bed::start();
    bed.pg.create_db("shop").unwrap();
    bed.pg.psql_script("shop", SHOP_SCHEMA).unwrap();
    bed
}

fn run_document(local: &Local, instance_id: &str, deploy: &str, orders: &str) -> Value {
    json!({
        "application": "shop",
        "version": {"commit": "v1.5.0"},
        "targets": [
            {"type": "database", "url_env": "SHOP_DB_URL"},
            {"type": "instance", "instance_id": instance_id}
        ],
        "deploy": {"type": "lambda", "function_name": deploy},
        "checks": {
            "http": [{"url": format!("{}/moto-api/", local.endpoint()), "expect_status": 200}],
            "sql": [{"query": "SELECT count(*) FROM orders", "expect": orders}]
        },
        "policy": {"first_wait_seconds": 1, "max_wait_seconds": 2}
    })
}

#[test]
fn happy_path_backs_up_deploys_checks_and_succeeds() {
    let bed = shop_bed();
    let orders = bed.pg.psql("shop", "SELECT count(*) FROM orders").unwrap();
    let local = Local::start(
        &bed,
        &[("SHOP_DB_URL", bed.pg.url("shop"))],
        &[(
            "shop-deploy",
            "cat > /dev/null; echo '{\"deployed\": \"v1.5.0\"}'".to_string(),
        )],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ec2 = local.ec2(&rt);
    let id = instance(&rt, &ec2);
    let before = devices(&rt, &ec2, &id);
    let (run, outcome) = local.run(&run_document(&local, &id, "shop-deploy", orders.trim()));
    assert!(run.ok, "{}", run.all());
    assert_eq!(outcome["status"], "SUCCEEDED", "{outcome}");
    let states: Vec<&str> = outcome["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap())
        .collect();
    for s in [
        "Prepare",
        "BackupTargets",
        "VerifyBackup",
        "DeployLambda",
        "VerifyDeploy",
    ] {
        assert!(states.contains(&s), "{s} not run: {states:?}");
    }
    assert!(!states.contains(&"RestoreTargets"), "{states:?}");
    let name = outcome["name"].as_str().unwrap();
    let manifest = local.manifest(name);
    assert_eq!(manifest["state"], "completed", "{manifest}");
    assert_eq!(manifest["databases"][0]["database"], "shop");
    assert_eq!(manifest["instances"][0]["instance_id"], id.as_str());
    assert_eq!(manifest["app_version"], "v1.5.0");
    assert_eq!(devices(&rt, &ec2, &id), before, "nothing was restored");
}

#[test]
fn destructive_failed_deploy_is_restored_and_fails_with_deploy_failed() {
    let bed = shop_bed();
    let before = bed.table_checksums("shop");
    let orders = bed.pg.psql("shop", "SELECT count(*) FROM orders").unwrap();
    let migration = std::env::temp_dir().join(format!("backstop-migration-{}.sql", rand_suffix()));
    std::fs::write(&migration, DESTRUCTIVE_MIGRATION).unwrap();
    let deploy = format!(
        "cat > /dev/null; {}/psql -q -v ON_ERROR_STOP=1 \"$SHOP_DB_URL\" -f {} >/dev/null && \
         echo 'migration 0042 failed after dropping orders.note' >&2; exit 1",
        bed.pg.bin_dir().display(),
        migration.display()
    );
    let local = Local::start(
        &bed,
        &[("SHOP_DB_URL", bed.pg.url("shop"))],
        &[("shop-migrate", deploy)],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ec2 = local.ec2(&rt);
    let id = instance(&rt, &ec2);
    let original = devices(&rt, &ec2, &id);
    let (run, outcome) = local.run(&run_document(&local, &id, "shop-migrate", orders.trim()));
    let _ = std::fs::remove_file(&migration);
    assert!(!run.ok, "a failed deploy fails the run: {}", run.all());
    assert_eq!(outcome["status"], "FAILED", "{outcome}");
    assert_eq!(outcome["error"], "DeployFailed", "{outcome}");
    let cause: Value = serde_json::from_str(outcome["cause"].as_str().unwrap()).unwrap();
    assert_eq!(cause["error"], "CommandFailed", "{cause}");
    assert!(
        cause["cause"]
            .as_str()
            .unwrap()
            .contains("migration 0042 failed"),
        "{cause}"
    );
    assert_eq!(cause["backup_id"], outcome["name"]);
    let restored = cause["restored"].to_string();
    assert!(restored.contains("database shop"), "{restored}");
    assert!(restored.contains(&id), "{restored}");

    // The data is back, table by table, and the broken database is kept.
    assert_eq!(bed.table_checksums("shop"), before);
    assert!(
        bed.databases()
            .iter()
            .any(|d| d.starts_with("shop_failed_")),
        "{:?}",
        bed.databases()
    );
    // Each device is on a new volume from the backup's snapshot; the old ones are kept.
    let manifest = local.manifest(outcome["name"].as_str().unwrap());
    let now = devices(&rt, &ec2, &id);
    for (device, old_volume, _) in &original {
        let (_, new_volume, from) = now.iter().find(|(d, _, _)| d == device).unwrap();
        assert_ne!(new_volume, old_volume);
        let want = manifest["instances"][0]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["device"] == device.as_str())
            .unwrap()["snapshot_id"]
            .as_str()
            .map(str::to_string);
        assert_eq!(from, &want, "{device}");
        let kept = rt
            .block_on(ec2.describe_volumes().volume_ids(old_volume).send())
            .unwrap();
        assert_eq!(kept.volumes().len(), 1, "the replaced volume is kept");
    }
}
