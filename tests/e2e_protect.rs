//! The protected deploy end to end: `backstop local` (moto executing the real
//! `statemachine/protect.asl.json`, the project's functions served on its Lambda port), a
//! throwaway PostgreSQL, an instance in moto, and `backstop run` driving one execution.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, Filter, InstanceType};
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

    fn sfn(&self, rt: &tokio::runtime::Runtime) -> aws_sdk_sfn::Client {
        let _guard = rt.enter();
        let conf = aws_sdk_sfn::Config::builder()
            .endpoint_url(self.endpoint())
            .region(aws_sdk_sfn::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sfn::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .behavior_version_latest()
            .build();
        aws_sdk_sfn::Client::from_conf(conf)
    }

    fn state_machine_arn(&self) -> &str {
        self.info["state_machine_arn"].as_str().unwrap()
    }

    /// The Lambdas' task context on this endpoint and bucket, with `guard` watching the
    /// `shop-pipeline:Deploy` stage.
    fn context(&self, rt: &tokio::runtime::Runtime) -> backstop_core::tasks::Context {
        let shared = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(self.endpoint())
                .region(aws_config::Region::new("us-east-1"))
                .credentials_provider(Credentials::new("testing", "testing", None, None, "t"))
                .load(),
        );
        let mut ctx =
            backstop_core::tasks::Context::new(&shared, "backstop-local", "backstop").unwrap();
        ctx.state_machine_arn = Some(self.state_machine_arn().to_string());
        ctx.guard = backstop_core::guard::GuardConfig::parse("shop-pipeline:Deploy").unwrap();
        ctx
    }

    /// Invokes `backstop-<function>` through `backstop local`'s Lambda Invoke API (so it runs
    /// where the run's environment is, as in the state machine); its result.
    fn invoke(&self, function: &str, payload: &Value) -> Value {
        let out = TempFile::new("invoke-out.json");
        let run = Command::new(format!("{}/.venv/bin/aws", env!("CARGO_MANIFEST_DIR")))
            .args(["--endpoint-url", self.info["router"].as_str().unwrap()])
            .args([
                "--region",
                "us-east-1",
                "--output",
                "json",
                "lambda",
                "invoke",
            ])
            .args(["--function-name", &format!("backstop-{function}")])
            .args(["--payload", &payload.to_string(), &out.path()])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap();
        let meta = String::from_utf8_lossy(&run.stdout).to_string();
        let result: Value = serde_json::from_slice(&std::fs::read(out.path()).unwrap())
            .unwrap_or_else(|e| panic!("{function}: {e}: {meta} {run:?}"));
        assert!(
            run.status.success() && !meta.contains("FunctionError"),
            "{function} failed: {meta} {result}"
        );
        result
    }

    /// The names of every execution of the state machine.
    fn executions(&self, rt: &tokio::runtime::Runtime) -> Vec<String> {
        let listed = rt
            .block_on(
                self.sfn(rt)
                    .list_executions()
                    .state_machine_arn(self.state_machine_arn())
                    .send(),
            )
            .unwrap();
        listed
            .executions()
            .iter()
            .map(|e| e.name().to_string())
            .collect()
    }

    /// Waits for an execution to end; its description.
    fn finished(
        &self,
        rt: &tokio::runtime::Runtime,
        arn: &str,
    ) -> aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput {
        let sfn = self.sfn(rt);
        for _ in 0..600 {
            let d = rt
                .block_on(sfn.describe_execution().execution_arn(arn).send())
                .unwrap();
            if d.status().as_str() != "RUNNING" {
                return d;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("{arn} still running after 3 minutes");
    }

    /// Asserts that the execution entered each of `states`.
    fn assert_entered(&self, rt: &tokio::runtime::Runtime, outcome: &Value, states: &[&str]) {
        let entered = self.entered(rt, outcome["execution_arn"].as_str().unwrap());
        for s in states {
            assert!(
                entered.iter().any(|e| e == s),
                "{s} not entered: {entered:?}"
            );
        }
    }

    /// Every state the execution entered, in order (Map iterations included), from its
    /// history: unlike the outcome's `states`, this also names states that failed.
    fn entered(&self, rt: &tokio::runtime::Runtime, execution_arn: &str) -> Vec<String> {
        let sfn = self.sfn(rt);
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = rt
                .block_on(
                    sfn.get_execution_history()
                        .execution_arn(execution_arn)
                        .set_next_token(token)
                        .max_results(1000)
                        .send(),
                )
                .unwrap();
            names.extend(
                page.events()
                    .iter()
                    .filter_map(|e| e.state_entered_event_details())
                    .map(|d| d.name().to_string()),
            );
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return names;
            }
        }
    }

    /// Every key in the local bucket.
    fn keys(&self, rt: &tokio::runtime::Runtime) -> Vec<String> {
        let s3 = common::s3_client(&self.endpoint());
        let out = rt
            .block_on(s3.list_objects_v2().bucket("backstop-local").send())
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    /// `aws ARGS` (the dev venv's CLI) against the local endpoint; its stdout.
    fn aws(&self, args: &[&str]) -> String {
        let out = Command::new(format!("{}/.venv/bin/aws", env!("CARGO_MANIFEST_DIR")))
            .args([
                "--endpoint-url",
                &self.endpoint(),
                "--region",
                "us-east-1",
                "--output",
                "json",
            ])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A queue that receives every event with source `backstop` on the default bus.
    fn events_queue(&self) -> String {
        let url: Value = serde_json::from_str(&self.aws(&[
            "sqs",
            "create-queue",
            "--queue-name",
            "backstop-events",
        ]))
        .unwrap();
        self.aws(&[
            "events",
            "put-rule",
            "--name",
            "backstop-events",
            "--event-pattern",
            r#"{"source": ["backstop"]}"#,
        ]);
        self.aws(&[
            "events",
            "put-targets",
            "--rule",
            "backstop-events",
            "--targets",
            "Id=queue,Arn=arn:aws:sqs:us-east-1:123456789012:backstop-events",
        ]);
        url["QueueUrl"].as_str().unwrap().to_string()
    }

    /// Every event the queue holds: (detail-type, detail).
    fn events(&self, queue: &str) -> Vec<(String, Value)> {
        let mut events = Vec::new();
        loop {
            let out = self.aws(&[
                "sqs",
                "receive-message",
                "--queue-url",
                queue,
                "--max-number-of-messages",
                "10",
                "--visibility-timeout",
                "600",
            ]);
            if out.trim().is_empty() {
                return events;
            }
            let page: Value = serde_json::from_str(&out).unwrap();
            let messages = page["Messages"].as_array().cloned().unwrap_or_default();
            if messages.is_empty() {
                return events;
            }
            for m in messages {
                let event: Value = serde_json::from_str(m["Body"].as_str().unwrap()).unwrap();
                assert_eq!(event["source"], "backstop", "{event}");
                events.push((
                    event["detail-type"].as_str().unwrap().to_string(),
                    event["detail"].clone(),
                ));
            }
        }
    }

    /// One object of the local bucket.
    fn object(&self, key: &str) -> Vec<u8> {
        let s3 = common::s3_client(&self.endpoint());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let out = rt
            .block_on(s3.get_object().bucket("backstop-local").key(key).send())
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        rt.block_on(out.body.collect()).unwrap().to_vec()
    }

    /// `backstop ARGS` against the local endpoint.
    fn backstop(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backstop"));
        cmd.args(args)
            .env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("BACKSTOP_LOG");
        Run::of(cmd)
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

/// Each device of the instance is on a new volume (not the one in `original`) made from the
/// manifest's snapshot of that device.
fn assert_swapped_back(
    rt: &tokio::runtime::Runtime,
    ec2: &aws_sdk_ec2::Client,
    id: &str,
    original: &[(String, String, Option<String>)],
    manifest: &Value,
) {
    let now = devices(rt, ec2, id);
    for (device, old_volume, _) in original {
        let (_, new_volume, from) = now.iter().find(|(d, _, _)| d == device).unwrap();
        assert_ne!(new_volume, old_volume, "{device} swapped back");
        let want = manifest["instances"][0]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["device"] == device.as_str())
            .unwrap()["snapshot_id"]
            .as_str()
            .map(str::to_string);
        assert_eq!(from, &want, "{device}");
    }
}

/// The names in the outcome's `states`: every state left, in order.
fn exited(outcome: &Value) -> Vec<&str> {
    outcome["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap())
        .collect()
}

/// The outcome's cause, which the Fail states carry as JSON.
fn cause_of(outcome: &Value) -> Value {
    let text = outcome["cause"]
        .as_str()
        .unwrap_or_else(|| panic!("no cause: {outcome}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("cause is not JSON ({e}): {text}"))
}

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(what: &str) -> TempFile {
        TempFile(std::env::temp_dir().join(format!(
            "backstop-{what}-{}-{}",
            std::process::id(),
            rand_suffix()
        )))
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A tiny HTTP server on 127.0.0.1 answering every request with `status` and a short body;
/// counts the requests; stopped (and its thread joined) on drop.
struct Answering {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Answering {
    fn start(status: &'static str) -> Answering {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let body = "release 1.5.0 is broken";
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Answering {
            addr,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The statement a deploy stand-in runs: a new order, so a restore is visible.
const NEW_ORDER: &str =
    "INSERT INTO orders (customer_id, product_id, qty, note) VALUES (1, 1, 1, 'placed by v1.5.0')";

/// A shell command running `sql` on `$SHOP_DB_URL` with the bed's psql.
fn psql_on_shop(bed: &Bed, sql: &str) -> String {
    format!(
        "{}/psql -q -v ON_ERROR_STOP=1 \"$SHOP_DB_URL\" -c \"{sql}\" >/dev/null",
        bed.pg.bin_dir().display()
    )
}

/// A deploy stand-in that places a new order and succeeds.
fn deploy_placing_an_order(bed: &Bed) -> String {
    format!(
        "cat > /dev/null; {} && echo '{{\"deployed\": \"v1.5.0\"}}'",
        psql_on_shop(bed, NEW_ORDER)
    )
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
    let queue = local.events_queue();
    let (run, outcome) = local.run(&run_document(&local, &id, "shop-deploy", orders.trim()));
    assert!(run.ok, "{}", run.all());
    assert_eq!(outcome["status"], "SUCCEEDED", "{outcome}");
    let states = exited(&outcome);
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
    // The deploy passed its checks, and the manifest says so: v1.5.0 runs from now on.
    assert!(
        manifest["deployed"]["checks"]
            .as_str()
            .unwrap()
            .contains("passed"),
        "{manifest}"
    );
    assert!(
        !local.keys(&rt).iter().any(|k| k.contains("incident")),
        "no incident report for a protected deploy"
    );
    let published = local.events(&queue);
    let kinds: Vec<&str> = published.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["BackupCompleted", "DeployProtected"],
        "{published:?}"
    );
    assert_eq!(published[1].1["backup_id"], name, "{published:?}");
    assert_eq!(published[1].1["commit"], "v1.5.0", "{published:?}");
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
        &[
            ("shop-migrate", deploy),
            ("shop-ok", "cat > /dev/null; echo '{}'".to_string()),
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ec2 = local.ec2(&rt);
    let id = instance(&rt, &ec2);
    // v1.4.2 was deployed under Backstop and passed its checks: it is what the next backup
    // holds.
    let mut previous = run_document(&local, &id, "shop-ok", orders.trim());
    previous["version"]["commit"] = json!("v1.4.2");
    let (ok, _) = local.run(&previous);
    assert!(ok.ok, "{}", ok.all());
    let original = devices(&rt, &ec2, &id);
    let queue = local.events_queue();
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

    // The incident report, JSON and Markdown, beside the backup.
    let name = outcome["name"].as_str().unwrap();
    let report = local.object(&format!("backstop/shop/{name}/incident.json"));
    let report: Value = serde_json::from_slice(&report).unwrap();
    assert_eq!(report["outcome"], "DeployFailed", "{report}");
    assert_eq!(report["original_error"], "CommandFailed", "{report}");
    assert!(
        report["original_cause"]
            .as_str()
            .unwrap()
            .contains("migration 0042 failed after dropping orders.note"),
        "{report}"
    );
    assert_eq!(report["versions"]["deploy_commit"], "v1.5.0", "{report}");
    assert_eq!(report["versions"]["backup_commit"], "v1.4.2", "{report}");
    let timeline: Vec<&str> = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    let order = [
        "Prepare",
        "BackupTargets",
        "VerifyBackup",
        "DeployLambda",
        "RestoreTargets",
        "VerifyRestore",
        "ReportDeployFailure",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|s| {
            timeline
                .iter()
                .position(|t| t == s)
                .unwrap_or_else(|| panic!("{s} not in {timeline:?}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{timeline:?}");
    assert!(
        report["restore_seconds"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert_eq!(report["restored"].as_array().unwrap().len(), 2, "{report}");
    let kept = report["failed_state"].to_string();
    assert!(kept.contains("database shop_failed_"), "{kept}");
    assert_eq!(kept.matches("volume vol-").count(), 2, "{kept}");
    assert!(
        report["checks"].to_string().contains("after the restore"),
        "{report}"
    );
    let md = String::from_utf8(local.object(&format!("backstop/shop/{name}/incident.md"))).unwrap();
    assert!(
        md.starts_with("# Incident: shop deploy v1.5.0 (DeployFailed)"),
        "{md}"
    );
    assert!(md.contains("| ReportDeployFailure |"), "{md}");
    // People are told: the backup, then the failed deploy and what was restored.
    let published = local.events(&queue);
    let kinds: Vec<&str> = published.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["BackupCompleted", "DeployFailedRestored"],
        "{published:?}"
    );
    let detail = &published[1].1;
    assert_eq!(detail["backup_id"], name, "{detail}");
    assert!(
        detail["summary"]
            .as_str()
            .unwrap()
            .starts_with("the deploy failed (CommandFailed); restored: database shop"),
        "{detail}"
    );
    assert_eq!(
        detail["incident_report"],
        format!("s3://backstop-local/backstop/shop/{name}/incident.md")
    );
    // The CLI reads it back.
    let shown = local.backstop(&[
        "incidents",
        "show",
        "--backup-id",
        name,
        "--bucket",
        "backstop-local",
    ]);
    assert!(shown.ok, "{}", shown.all());
    assert_eq!(shown.stdout, md);
    let listed = local.backstop(&["incidents", "list", "--bucket", "backstop-local"]);
    assert!(listed.ok, "{}", listed.all());
    assert!(listed.stdout.contains(name), "{}", listed.stdout);
    assert_eq!(listed.stdout.lines().count(), 2, "{}", listed.stdout);

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
    assert_swapped_back(&rt, &ec2, &id, &original, &manifest);
    for (_, old_volume, _) in &original {
        let kept = rt
            .block_on(ec2.describe_volumes().volume_ids(old_volume).send())
            .unwrap();
        assert_eq!(kept.volumes().len(), 1, "the replaced volume is kept");
    }
}

/// The top-level states of the protect state machine that come after the backup.
const AFTER_BACKUP: [&str; 10] = [
    "VerifyBackup",
    "ChooseDeploy",
    "DeployLambda",
    "DeployCodeBuild",
    "VerifyDeploy",
    "Protected",
    "RestoreTargets",
    "VerifyRestore",
    "DeployFailed",
    "RestoreFailed",
];

#[test]
fn http_check_still_failing_after_the_restore_fails_with_restore_failed() {
    let bed = shop_bed();
    let before = bed.table_checksums("shop");
    let orders = bed.pg.psql("shop", "SELECT count(*) FROM orders").unwrap();
    let health = Answering::start("500 Internal Server Error");
    let local = Local::start(
        &bed,
        &[("SHOP_DB_URL", bed.pg.url("shop"))],
        &[("shop-deploy", deploy_placing_an_order(&bed))],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ec2 = local.ec2(&rt);
    let id = instance(&rt, &ec2);
    let mut doc = run_document(&local, &id, "shop-deploy", orders.trim());
    doc["checks"]["http"] = json!([{"url": health.url(), "expect_status": 200}]);
    let (run, outcome) = local.run(&doc);
    assert!(!run.ok, "{}", run.all());
    assert_eq!(outcome["status"], "FAILED", "{outcome}");
    assert_eq!(outcome["error"], "RestoreFailed", "{outcome}");
    // The cause is the check that still fails after the restore, with what was restored
    // and the deploy's own failure.
    let cause = cause_of(&outcome);
    assert_eq!(cause["errorType"], "VerificationFailed", "{cause}");
    let message = cause["errorMessage"].as_str().unwrap();
    for want in [
        format!("GET {} answered 500, expected 200", health.url()),
        "still after the restore".to_string(),
        "database shop".to_string(),
        id.clone(),
        "the deploy failed with VerificationFailed".to_string(),
    ] {
        assert!(message.contains(&want), "{want:?} not in {message}");
    }
    local.assert_entered(
        &rt,
        &outcome,
        &[
            "DeployLambda",
            "VerifyDeploy",
            "RestoreTargets",
            "VerifyRestore",
        ],
    );
    assert!(
        health.hits() >= 2,
        "checked after the deploy and after the restore"
    );
    // The restore itself ran: the order the deploy placed is gone.
    assert_eq!(bed.table_checksums("shop"), before);
}

#[test]
fn sql_check_failing_after_the_deploy_is_restored_and_fails_with_deploy_failed() {
    let bed = shop_bed();
    let before = bed.table_checksums("shop");
    let orders = bed.pg.psql("shop", "SELECT count(*) FROM orders").unwrap();
    let local = Local::start(
        &bed,
        &[("SHOP_DB_URL", bed.pg.url("shop"))],
        &[("shop-deploy", deploy_placing_an_order(&bed))],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ec2 = local.ec2(&rt);
    let id = instance(&rt, &ec2);
    let (run, outcome) = local.run(&run_document(&local, &id, "shop-deploy", orders.trim()));
    assert!(!run.ok, "{}", run.all());
    assert_eq!(outcome["status"], "FAILED", "{outcome}");
    assert_eq!(outcome["error"], "DeployFailed", "{outcome}");
    // The cause names the check that failed after the deploy, and what the restore did.
    let cause = cause_of(&outcome);
    assert_eq!(cause["error"], "VerificationFailed", "{cause}");
    let original: Value = serde_json::from_str(cause["cause"].as_str().unwrap()).unwrap();
    assert_eq!(original["errorType"], "VerificationFailed", "{original}");
    let count: u64 = orders.trim().parse().unwrap();
    let want = format!(
        "SELECT count(*) FROM orders on shop gave \"{}\", expected \"{count}\"",
        count + 1
    );
    assert!(
        original["errorMessage"].as_str().unwrap().contains(&want),
        "{original}"
    );
    assert_eq!(cause["backup_id"], outcome["name"]);
    let restored = cause["restored"].to_string();
    assert!(restored.contains("database shop"), "{restored}");
    assert!(restored.contains(&id), "{restored}");
    assert!(
        cause["checks_after_restore"]
            .as_str()
            .unwrap()
            .contains("1 SQL and 0 alarm check(s) passed"),
        "{cause}"
    );
    local.assert_entered(
        &rt,
        &outcome,
        &[
            "DeployLambda",
            "VerifyDeploy",
            "RestoreTargets",
            "VerifyRestore",
        ],
    );
    assert_eq!(bed.table_checksums("shop"), before);
}

#[test]
fn unreachable_database_fails_the_backup_and_never_deploys() {
    let bed = shop_bed();
    let marker = TempFile::new("deployed");
    let local = Local::start(
        &bed,
        &[("SHOP_DB_URL", bed.pg.url("no_such_db"))],
        &[(
            "shop-deploy",
            format!("cat > /dev/null; touch {}; echo '{{}}'", marker.path()),
        )],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ec2 = local.ec2(&rt);
    let id = instance(&rt, &ec2);
    let (run, outcome) = local.run(&run_document(&local, &id, "shop-deploy", "4000"));
    assert!(!run.ok, "{}", run.all());
    assert_eq!(outcome["status"], "FAILED", "{outcome}");
    assert_eq!(outcome["error"], "BackupFailed", "{outcome}");
    let cause = cause_of(&outcome);
    assert_eq!(cause["errorType"], "DatabaseError", "{cause}");
    assert!(
        cause["errorMessage"]
            .as_str()
            .unwrap()
            .contains("\"no_such_db\" does not exist"),
        "{cause}"
    );
    assert!(!marker.0.exists(), "the deploy ran");
    // The instance's part finished, but the backup as a whole is recorded as failed.
    let manifest = local.manifest(outcome["name"].as_str().unwrap());
    assert_eq!(manifest["state"], "failed", "{manifest}");
    assert!(
        manifest["error"]
            .as_str()
            .unwrap()
            .contains("DatabaseError"),
        "{manifest}"
    );
    let entered = local.entered(&rt, outcome["execution_arn"].as_str().unwrap());
    let backup = entered.iter().position(|s| s == "BackupTargets").unwrap();
    assert_eq!(entered.last().map(String::as_str), Some("BackupFailed"));
    assert!(
        entered.iter().any(|s| s == "RecordBackupFailure"),
        "{entered:?}"
    );
    for s in &entered[backup..] {
        assert!(!AFTER_BACKUP.contains(&s.as_str()), "{s} ran: {entered:?}");
    }
}

#[test]
fn corrupted_backup_fails_its_database_restore_while_the_instance_is_still_restored() {
    let bed = shop_bed();
    // What the deploy leaves: the same order placed in a copy taken now.
    bed.pg
        .psql("postgres", "CREATE DATABASE shop_expected TEMPLATE shop")
        .unwrap();
    bed.pg.psql("shop_expected", NEW_ORDER).unwrap();
    let expected = bed.table_checksums("shop_expected");
    assert_ne!(expected, bed.table_checksums("shop"));
    let orders = bed.pg.psql("shop", "SELECT count(*) FROM orders").unwrap();
    // The deploy places the order, flips 16 bytes in the middle of the backup's dump (same
    // size, so only the SHA-256 can tell) and fails. The script is written once the endpoint
    // is known.
    let script = TempFile::new("deploy.sh");
    let local = Local::start(
        &bed,
        &[("SHOP_DB_URL", bed.pg.url("shop"))],
        &[("shop-deploy", format!("sh {}", script.path()))],
    );
    let aws = format!(
        "{}/.venv/bin/aws --endpoint-url {} --region us-east-1",
        env!("CARGO_MANIFEST_DIR"),
        local.endpoint()
    );
    std::fs::write(
        &script.0,
        format!(
            r#"set -e
id=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["backup_id"])')
{psql}
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
key="s3://backstop-local/backstop/shop/$id/db/shop.dump"
tmp=$(mktemp)
{aws} s3 cp --quiet "$key" "$tmp"
python3 -c 'import sys; p = sys.argv[1]; b = bytearray(open(p, "rb").read()); m = len(b) // 2; b[m:m + 16] = bytes(x ^ 0xFF for x in b[m:m + 16]); open(p, "wb").write(b)' "$tmp"
{aws} s3 cp --quiet "$tmp" "$key"
rm -f "$tmp"
echo 'release 1.5.0 failed to start' >&2
exit 1
"#,
            psql = psql_on_shop(&bed, NEW_ORDER),
        ),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ec2 = local.ec2(&rt);
    let id = instance(&rt, &ec2);
    let original = devices(&rt, &ec2, &id);
    let queue = local.events_queue();
    let (run, outcome) = local.run(&run_document(&local, &id, "shop-deploy", orders.trim()));
    assert!(!run.ok, "{}", run.all());
    assert_eq!(outcome["status"], "FAILED", "{outcome}");
    assert_eq!(outcome["error"], "RestoreFailed", "{outcome}");
    let kinds: Vec<String> = local.events(&queue).into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["BackupCompleted", "RestoreFailed"]);
    // The database's restore stopped on the dump's SHA-256 (its size still matched); the
    // instance, its sibling in the restore Map, was restored all the same, and the cause
    // names both.
    let cause = cause_of(&outcome);
    assert_eq!(cause["errorType"], "RestoreIncomplete", "{cause}");
    let message = cause["errorMessage"].as_str().unwrap();
    let dump = format!(
        "database SHOP_DB_URL was not restored (ChecksumMismatch: \
         s3://backstop-local/backstop/shop/{}/db/shop.dump has SHA-256",
        outcome["name"].as_str().unwrap()
    );
    assert!(message.contains(&dump), "{message}");
    assert!(
        message.contains(&format!(
            "restored: instance {id} (2 volumes from the backup's snapshots, running)"
        )),
        "{message}"
    );
    assert!(
        message.contains("the deploy failed with CommandFailed"),
        "{message}"
    );
    local.assert_entered(
        &rt,
        &outcome,
        &[
            "VerifyBackup",
            "DeployLambda",
            "RestoreTargets",
            "Restore",
            "RestoreTargetFailed",
            "VerifyRestore",
        ],
    );
    // Its incident report says what was not restored.
    let report: Value = serde_json::from_slice(&local.object(&format!(
        "backstop/shop/{}/incident.json",
        outcome["name"].as_str().unwrap()
    )))
    .unwrap();
    assert_eq!(report["outcome"], "RestoreFailed", "{report}");
    assert!(
        report["restore_failure"]
            .as_str()
            .unwrap()
            .starts_with("RestoreIncomplete: the restore is incomplete: database SHOP_DB_URL"),
        "{report}"
    );
    let manifest = local.manifest(outcome["name"].as_str().unwrap());
    assert_swapped_back(&rt, &ec2, &id, &original, &manifest);
    // The live database is exactly what the deploy left; no swap happened and the scratch
    // restore database is gone.
    assert_eq!(bed.table_checksums("shop"), expected);
    let dbs = bed.databases();
    assert!(
        !dbs.iter()
            .any(|d| d.starts_with("shop_failed_") || d.starts_with("shop_restore_")),
        "{dbs:?}"
    );
}

#[test]
fn two_databases_and_two_instances_go_through_the_map() {
    let bed = shop_bed();
    bed.pg.create_db("stock").unwrap();
    bed.pg.psql_script("stock", SHOP_SCHEMA).unwrap();
    let orders = bed.pg.psql("shop", "SELECT count(*) FROM orders").unwrap();
    let local = Local::start(
        &bed,
        &[
            ("SHOP_DB_URL", bed.pg.url("shop")),
            ("STOCK_DB_URL", bed.pg.url("stock")),
        ],
        &[(
            "shop-deploy",
            "cat > /dev/null; echo '{\"deployed\": \"v1.5.0\"}'".to_string(),
        )],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ec2 = local.ec2(&rt);
    let ids = [instance(&rt, &ec2), instance(&rt, &ec2)];
    let mut doc = run_document(&local, &ids[0], "shop-deploy", orders.trim());
    doc["targets"] = json!([
        {"type": "database", "url_env": "SHOP_DB_URL"},
        {"type": "database", "url_env": "STOCK_DB_URL"},
        {"type": "instance", "instance_id": ids[0]},
        {"type": "instance", "instance_id": ids[1]}
    ]);
    doc["checks"]["sql"][0]["database"] = json!("shop");
    let (run, outcome) = local.run(&doc);
    assert!(run.ok, "{}", run.all());
    assert_eq!(outcome["status"], "SUCCEEDED", "{outcome}");
    let states = exited(&outcome);
    assert_eq!(
        states.iter().filter(|s| **s == "StartBackup").count(),
        4,
        "{states:?}"
    );
    assert!(!states.contains(&"RestoreTargets"), "{states:?}");
    let manifest = local.manifest(outcome["name"].as_str().unwrap());
    assert_eq!(manifest["state"], "completed", "{manifest}");
    let names = |list: &str, field: &str| {
        let mut v: Vec<String> = manifest[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d[field].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("databases", "database"), ["shop", "stock"]);
    let mut want = ids.to_vec();
    want.sort();
    assert_eq!(names("instances", "instance_id"), want);
}

/// The stage event CodePipeline sends when stage `stage` of `shop-pipeline` changes state.
fn stage_event(execution_id: &str, stage: &str, state: &str) -> Value {
    json!({
        "version": "0",
        "id": format!("event-{}", rand_suffix()),
        "detail-type": "CodePipeline Stage Execution State Change",
        "source": "aws.codepipeline",
        "account": "123456789012",
        "time": "2026-11-25T14:03:11Z",
        "region": "us-east-1",
        "resources": ["arn:aws:codepipeline:us-east-1:123456789012:shop-pipeline"],
        "detail": {"pipeline": "shop-pipeline", "execution-id": execution_id,
                   "stage": stage, "state": state, "version": 1}
    })
}

#[test]
fn guard_mode_restores_the_backup_of_a_pipeline_execution_whose_deploy_stage_failed() {
    let bed = shop_bed();
    let before = bed.table_checksums("shop");
    let orders = bed.pg.psql("shop", "SELECT count(*) FROM orders").unwrap();
    let local = Local::start(&bed, &[("SHOP_DB_URL", bed.pg.url("shop"))], &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let queue = local.events_queue();
    // The pipeline's Backstop stage: backup and checks, no deploy step (the pipeline's own
    // Deploy stage deploys).
    let doc = json!({
        "application": "shop",
        "version": {"commit": "v1.5.0", "pipeline_execution_id": "pipe-exec-1"},
        "targets": [{"type": "database", "url_env": "SHOP_DB_URL"}],
        "checks": {"sql": [{"query": "SELECT count(*) FROM orders", "expect": orders.trim()}]},
        "policy": {"first_wait_seconds": 1, "max_wait_seconds": 2}
    });
    let (run, outcome) = local.run(&doc);
    assert!(run.ok, "{}", run.all());
    let backup_id = outcome["name"].as_str().unwrap().to_string();
    let manifest = local.manifest(&backup_id);
    assert_eq!(
        manifest["run"]["version"]["pipeline_execution_id"], "pipe-exec-1",
        "the verified backup records its run: {manifest}"
    );
    assert!(
        manifest.get("deployed").is_none(),
        "nothing was deployed yet: {manifest}"
    );
    // The pipeline's Deploy stage breaks the database, then fails.
    bed.pg.psql_script("shop", DESTRUCTIVE_MIGRATION).unwrap();
    assert_ne!(bed.table_checksums("shop"), before);
    let ctx = local.context(&rt);
    let guard = |event: Value| {
        rt.block_on(backstop_core::tasks::invoke(&ctx, "guard", event))
            .unwrap()
    };

    // Not a failure, or not a guarded stage: nothing starts.
    let ignored = guard(stage_event("pipe-exec-1", "Deploy", "SUCCEEDED"));
    assert_eq!(ignored["outcome"], "ignored", "{ignored}");
    let ignored = guard(stage_event("pipe-exec-1", "Build", "FAILED"));
    assert_eq!(ignored["outcome"], "ignored", "{ignored}");
    assert_eq!(local.executions(&rt), vec![backup_id.clone()]);

    let started = guard(stage_event("pipe-exec-1", "Deploy", "FAILED"));
    assert_eq!(started["outcome"], "restore_started", "{started}");
    assert_eq!(started["backup_id"], backup_id.as_str());
    let arn = started["execution_arn"].as_str().unwrap().to_string();
    // EventBridge delivers the same event again, while the restore runs and after it ended.
    let again = guard(stage_event("pipe-exec-1", "Deploy", "FAILED"));
    assert_eq!(again["outcome"], "already_started", "{again}");
    assert_eq!(again["execution_arn"], arn.as_str());
    let ended = local.finished(&rt, &arn);
    assert_eq!(ended.status().as_str(), "FAILED", "{ended:?}");
    assert_eq!(ended.error(), Some("DeployFailed"), "{ended:?}");
    let cause: Value = serde_json::from_str(ended.cause().unwrap()).unwrap();
    assert_eq!(cause["error"], "PipelineStageFailed", "{cause}");
    assert!(
        cause["cause"]
            .as_str()
            .unwrap()
            .contains("stage Deploy of pipeline shop-pipeline"),
        "{cause}"
    );
    assert_eq!(cause["backup_id"], backup_id.as_str(), "{cause}");
    assert_eq!(
        bed.table_checksums("shop"),
        before,
        "the data is back as the backup holds it"
    );
    local.assert_entered(
        &rt,
        &json!({"execution_arn": arn}),
        &[
            "Entry",
            "GuardRestore",
            "RestoreTargets",
            "VerifyRestore",
            "ReportDeployFailure",
        ],
    );
    assert!(
        !local
            .entered(&rt, &arn)
            .iter()
            .any(|s| s == "Prepare" || s == "StartBackup"),
        "guard mode takes no new backup"
    );
    let after_restore = guard(stage_event("pipe-exec-1", "Deploy", "FAILED"));
    assert_eq!(
        after_restore["outcome"], "already_started",
        "{after_restore}"
    );
    assert_eq!(after_restore["status"], "FAILED", "{after_restore}");
    // The incident report lies beside the backup.
    let report: Value =
        serde_json::from_slice(&local.object(&format!("backstop/shop/{backup_id}/incident.json")))
            .unwrap();
    assert_eq!(report["outcome"], "DeployFailed", "{report}");
    assert_eq!(report["execution_arn"], arn.as_str(), "{report}");

    // A pipeline execution Backstop took no backup for: reported, nothing restored.
    let unknown = guard(stage_event("pipe-exec-unknown", "Deploy", "FAILED"));
    assert_eq!(unknown["outcome"], "no_backup", "{unknown}");
    let mut names = local.executions(&rt);
    names.sort();
    let mut expected = vec![backup_id.clone(), format!("guard-{backup_id}")];
    expected.sort();
    assert_eq!(names, expected, "exactly one restore execution was started");
    let events = local.events(&queue);
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert!(types.contains(&"DeployFailedRestored"), "{types:?}");
    let (_, no_backup) = events
        .iter()
        .find(|(t, _)| t == "GuardFoundNoBackup")
        .unwrap_or_else(|| panic!("no GuardFoundNoBackup: {types:?}"));
    assert_eq!(
        no_backup["pipeline_execution_id"], "pipe-exec-unknown",
        "{no_backup}"
    );
}

/// Databases on the bed's server whose name starts with `prefix`.
fn databases_named(bed: &Bed, prefix: &str) -> Vec<String> {
    bed.pg
        .psql(
            "postgres",
            &format!("SELECT datname FROM pg_database WHERE datname LIKE '{prefix}%'"),
        )
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn restore_drill_restores_the_latest_good_backup_into_scratch_and_leaves_nothing() {
    let bed = shop_bed();
    let orders = bed.pg.psql("shop", "SELECT count(*) FROM orders").unwrap();
    let local = Local::start(
        &bed,
        &[("SHOP_DB_URL", bed.pg.url("shop"))],
        &[("shop-ok", "cat > /dev/null; echo '{}'".to_string())],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ec2 = local.ec2(&rt);
    let id = instance(&rt, &ec2);
    let (run, outcome) = local.run(&run_document(&local, &id, "shop-ok", orders.trim()));
    assert!(run.ok, "{}", run.all());
    let backup_id = outcome["name"].as_str().unwrap().to_string();
    let manifest = local.manifest(&backup_id);
    let snapshots: Vec<String> = manifest["instances"][0]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["snapshot_id"].as_str().unwrap().to_string())
        .collect();
    let volumes_before = rt
        .block_on(ec2.describe_volumes().send())
        .unwrap()
        .volumes()
        .len();
    let queue = local.events_queue();
    let drill = || {
        let out = local.invoke("drill", &json!({}));
        let list = out
            .as_array()
            .unwrap_or_else(|| panic!("drill answered {out}"));
        assert_eq!(list.len(), 1, "one application: {out}");
        out[0].clone()
    };
    let leftovers = || {
        let drill_volumes = rt
            .block_on(
                ec2.describe_volumes()
                    .filters(
                        Filter::builder()
                            .name("tag-key")
                            .values("backstop:drill")
                            .build(),
                    )
                    .send(),
            )
            .unwrap();
        (
            databases_named(&bed, "backstop_verify"),
            drill_volumes.volumes().len(),
        )
    };

    let passed = drill();
    assert_eq!(passed["passed"], true, "{passed}");
    assert_eq!(passed["backup_id"], backup_id.as_str());
    assert_eq!(passed["databases"][0]["database"], "shop");
    assert_eq!(
        passed["databases"][0]["tables_matched"],
        manifest["databases"][0]["tables"].as_array().unwrap().len(),
        "every table restored with the manifest's row count: {passed}"
    );
    let drilled: Vec<String> = passed["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["snapshot_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(drilled, snapshots, "a volume from each snapshot: {passed}");
    assert_eq!(
        passed["cleaned_up"].as_array().unwrap().len(),
        snapshots.len(),
        "{passed}"
    );
    assert_eq!(leftovers(), (vec![], 0), "the drill leaves nothing behind");
    assert_eq!(
        rt.block_on(ec2.describe_volumes().send())
            .unwrap()
            .volumes()
            .len(),
        volumes_before
    );
    let key = passed["report_key"].as_str().unwrap();
    assert!(
        key.starts_with(&format!("backstop/shop/{backup_id}/drill-")),
        "{key}"
    );
    let stored: Value = serde_json::from_slice(&local.object(key)).unwrap();
    assert_eq!(
        stored, passed,
        "the report in the catalog is the one returned"
    );

    // The dump is corrupted in place (same size, 16 bytes flipped): the drill fails on it,
    // still drills the volumes, and again leaves nothing behind.
    let dump_key = manifest["databases"][0]["artifact"]["key"]
        .as_str()
        .unwrap();
    let mut dump = local.object(dump_key);
    let middle = dump.len() / 2;
    for b in &mut dump[middle..middle + 16] {
        *b ^= 0xff;
    }
    let s3 = common::s3_client(&local.endpoint());
    rt.block_on(
        s3.put_object()
            .bucket("backstop-local")
            .key(dump_key)
            .body(dump.into())
            .send(),
    )
    .unwrap();
    let failed = drill();
    assert_eq!(failed["passed"], false, "{failed}");
    let error = failed["databases"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("ChecksumMismatch"), "{error}");
    assert!(
        failed["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["error"].is_null()),
        "the volumes still pass: {failed}"
    );
    assert_eq!(
        leftovers(),
        (vec![], 0),
        "a failed drill leaves nothing either"
    );
    // The CLI runs the same drill and exits non-zero on a failed one.
    let cli = local.backstop(&["drill", "--bucket", "backstop-local"]);
    assert!(!cli.ok, "{}", cli.all());
    assert!(
        cli.stdout.contains("drill failed on 1 database(s)"),
        "{}",
        cli.all()
    );
    assert!(cli.stderr.contains("DrillFailed"), "{}", cli.all());
    assert_eq!(leftovers(), (vec![], 0), "{}", cli.all());
    let events = local.events(&queue);
    let drills: Vec<(&str, &Value)> = events
        .iter()
        .filter(|(t, _)| t.starts_with("Drill"))
        .map(|(t, d)| (t.as_str(), d))
        .collect();
    assert_eq!(
        drills.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        ["DrillPassed", "DrillFailed", "DrillFailed"],
        "{events:?}"
    );
    assert!(
        drills[1].1["summary"]
            .as_str()
            .unwrap()
            .contains("database shop: ChecksumMismatch"),
        "{:?}",
        drills[1]
    );
}

#[test]
fn prune_drops_the_failed_state_and_scratch_databases_older_than_the_policy() {
    let bed = shop_bed();
    let orders = bed.pg.psql("shop", "SELECT count(*) FROM orders").unwrap();
    let local = Local::start(&bed, &[("SHOP_DB_URL", bed.pg.url("shop"))], &[]);
    let doc = json!({
        "application": "shop",
        "targets": [{"type": "database", "url_env": "SHOP_DB_URL"}],
        "checks": {"sql": [{"query": "SELECT count(*) FROM orders", "expect": orders.trim()}]},
        "policy": {"first_wait_seconds": 1, "max_wait_seconds": 2}
    });
    let (run, _) = local.run(&doc);
    assert!(run.ok, "{}", run.all());
    let young = format!(
        "shop_failed_{}",
        backstop_core::restore::timestamp(time::OffsetDateTime::now_utc())
    );
    for db in [
        "shop_failed_20200101000000",
        young.as_str(),
        "backstop_verify_20200101000000_0a1b",
        "shopping_failed_20200101000000",
    ] {
        bed.pg.create_db(db).unwrap();
    }
    let left = || {
        let mut all = databases_named(&bed, "shop");
        all.extend(databases_named(&bed, "backstop_"));
        all.sort();
        all
    };
    let everything = left();
    let prune = |dry_run: bool| {
        local.invoke(
            "prune",
            &json!({"keep_last": 1, "max_age_days": 1, "dry_run": dry_run}),
        )
    };
    let planned = |plan: &Value| -> Vec<(String, String)> {
        plan["databases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["database"].as_str().unwrap().to_string(),
                    d["kind"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let expected = vec![
        (
            "backstop_verify_20200101000000_0a1b".to_string(),
            "drill scratch".to_string(),
        ),
        (
            "shop_failed_20200101000000".to_string(),
            "failed state".to_string(),
        ),
    ];
    let dry = prune(true);
    let mut found = planned(&dry);
    found.sort();
    assert_eq!(found, expected, "{dry}");
    assert_eq!(left(), everything, "a dry run drops nothing");
    let done = prune(false);
    let mut found = planned(&done);
    found.sort();
    assert_eq!(found, expected, "{done}");
    let mut kept = vec![
        "shop".to_string(),
        young.clone(),
        "shopping_failed_20200101000000".to_string(),
    ];
    kept.sort();
    assert_eq!(
        left(),
        kept,
        "the young failed state and what is not Backstop's stay"
    );
    assert!(
        done["servers_skipped"].as_array().unwrap().is_empty(),
        "{done}"
    );

    // The CLI runs without SHOP_DB_URL: it says so and searches no server.
    let cli = local.backstop(&[
        "--json",
        "prune",
        "--bucket",
        "backstop-local",
        "--keep-last",
        "1",
        "--max-age-days",
        "1",
        "--dry-run",
    ]);
    assert!(cli.ok, "{}", cli.all());
    let out: Value = serde_json::from_str(&cli.stdout).unwrap();
    let skipped = out["plan"]["servers_skipped"][0]
        .as_str()
        .unwrap_or_default();
    assert!(skipped.contains("SHOP_DB_URL"), "{out}");
}

#[test]
fn bad_run_documents_are_invalid_input_and_touch_nothing() {
    let bed = shop_bed();
    let local = Local::start(&bed, &[("SHOP_DB_URL", bed.pg.url("shop"))], &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ec2 = local.ec2(&rt);
    let id = instance(&rt, &ec2);
    let sfn = local.sfn(&rt);

    // `backstop run` refuses a document without targets before starting anything.
    let mut doc = run_document(&local, &id, "shop-deploy", "4000");
    doc.as_object_mut().unwrap().remove("targets");
    let (run, error) = local.run(&doc);
    assert!(!run.ok, "{}", run.all());
    assert_eq!(error["error"]["type"], "InvalidInput", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("targets"),
        "{error}"
    );
    let listed = rt
        .block_on(
            sfn.list_executions()
                .state_machine_arn(local.state_machine_arn())
                .send(),
        )
        .unwrap();
    assert!(listed.executions().is_empty(), "{listed:?}");

    // An execution started directly with a malformed document ends in the Fail state.
    let mut doc = run_document(&local, &id, "shop-deploy", "4000");
    doc["targets"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "disk", "disk_id": "d-1"}));
    let started = rt
        .block_on(
            sfn.start_execution()
                .state_machine_arn(local.state_machine_arn())
                .name("malformed")
                .input(doc.to_string())
                .send(),
        )
        .unwrap();
    let arn = started.execution_arn();
    let described = local.finished(&rt, arn);
    assert_eq!(described.status().as_str(), "FAILED", "{described:?}");
    assert_eq!(described.error(), Some("InvalidInput"), "{described:?}");
    let cause: Value = serde_json::from_str(described.cause().unwrap()).unwrap();
    assert_eq!(cause["errorType"], "InvalidInput", "{cause}");
    assert!(
        cause["errorMessage"].as_str().unwrap().contains("disk"),
        "{cause}"
    );
    assert_eq!(
        local.entered(&rt, arn),
        ["Entry", "Prepare", "InvalidRunDocument"],
        "only the document was read"
    );
    assert!(local.keys(&rt).is_empty(), "{:?}", local.keys(&rt));
    for (device, volume, _) in devices(&rt, &ec2, &id) {
        let snapshots = rt
            .block_on(
                ec2.describe_snapshots()
                    .filters(Filter::builder().name("volume-id").values(&volume).build())
                    .send(),
            )
            .unwrap();
        assert!(snapshots.snapshots().is_empty(), "{device}: {snapshots:?}");
    }
}
