//! The test bed and its builder: which servers a test gets (PostgreSQL, plain or TLS-only,
//! with databases loaded; moto, executing state machines or not; `backstop-local` as the local
//! state machine; a fault proxy in front of moto), and everything a test does with them that
//! is not Backstop: AWS clients and the task context on the bed's endpoint, looking at S3,
//! Step Functions, EC2 and the tables directly, and the events Backstop published.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, InstanceType};
use aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput;
use backstop_core::{Config, Context};
use backstop_testbed::{Fault, FaultProxy, Moto, PgCluster};
use serde_json::Value;

use super::cli::Cli;
use super::fixtures::FakeTools;
use super::local::Local;
use super::offline::shared_at;
use super::{ACCESS_KEY, PREFIX, SECRET_KEY};

/// The servers of one test, stopped (by PID) and removed when it is dropped.
pub struct Bed {
    /// Drives the bed's AWS clients from synchronous tests.
    pub rt: tokio::runtime::Runtime,
    /// The backup bucket (created on the bed's moto).
    pub bucket: String,
    pg: Option<PgCluster>,
    moto: Option<Moto>,
    local: Option<Local>,
    proxy: Option<FaultProxy>,
}

/// What a bed is made of; [`BedBuilder::build`] starts it.
#[derive(Default)]
#[must_use]
pub struct BedBuilder {
    postgres: bool,
    tls_only: bool,
    databases: Vec<(String, String)>,
    moto: bool,
    execute_state_machines: bool,
    local: Option<LocalSetup>,
    db_url_envs: Vec<(String, String)>,
    fault: Option<Fault>,
}

/// The local state machine's environment and stand-in functions, as given to the builder.
struct LocalSetup {
    envs: Vec<(String, String)>,
    functions: Vec<(String, String)>,
}

impl Bed {
    /// An empty bed; add what the test needs.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> BedBuilder {
        BedBuilder::default()
    }
}

impl BedBuilder {
    /// A throwaway PostgreSQL cluster (scram-sha-256 password auth).
    pub fn postgres(mut self) -> Self {
        self.postgres = true;
        self
    }

    /// A cluster that only accepts TLS connections, like RDS with `rds.force_ssl`.
    pub fn tls_only(mut self) -> Self {
        self.postgres = true;
        self.tls_only = true;
        self
    }

    /// A database on the cluster, loaded with `script` (SQL; may be empty).
    pub fn database(mut self, name: &str, script: &str) -> Self {
        self.postgres = true;
        self.databases.push((name.to_string(), script.to_string()));
        self
    }

    /// A moto server with the bucket.
    pub fn moto(mut self) -> Self {
        self.moto = true;
        self
    }

    /// moto whose Step Functions engine executes the state machines it is given.
    pub fn moto_executing_state_machines(mut self) -> Self {
        self.moto = true;
        self.execute_state_machines = true;
        self
    }

    /// `backstop-local` as the local state machine: its own moto executing the real
    /// `statemachine/protect.asl.json`, the project's functions served on its Lambda port
    /// with `envs` as their environment (the bed adds `PG_BIN_DIR`), and `functions` as
    /// stand-ins for the user's functions (NAME, shell command with the payload on stdin).
    pub fn local_state_machine(
        mut self,
        envs: &[(&str, &str)],
        functions: &[(&str, &str)],
    ) -> Self {
        let own = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        self.local = Some(LocalSetup {
            envs: own(envs),
            functions: own(functions),
        });
        self
    }

    /// Sets `var` in the local state machine's environment to the cluster's URL of `database`
    /// (so a run document's `url_env` finds it).
    pub fn db_url_env(mut self, var: &str, database: &str) -> Self {
        self.postgres = true;
        self.db_url_envs
            .push((var.to_string(), database.to_string()));
        self
    }

    /// A fault-injecting proxy in front of moto ([`Bed::proxy`]).
    pub fn fault_proxy(mut self, fault: Fault) -> Self {
        self.moto = true;
        self.fault = Some(fault);
        self
    }

    /// Starts everything, in order: PostgreSQL and its databases, moto (or the local state
    /// machine, which brings its own), the bucket, the proxy.
    pub fn build(self) -> Bed {
        assert!(
            !(self.moto && self.local.is_some()),
            "the local state machine brings its own moto"
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let pg = self.postgres.then(|| {
            let pg = if self.tls_only {
                PgCluster::start_tls_only()
            } else {
                PgCluster::start()
            }
            .expect("postgres starts");
            for (name, script) in &self.databases {
                pg.create_db(name).unwrap();
                if !script.is_empty() {
                    pg.psql_script(name, script).unwrap();
                }
            }
            pg
        });
        let bucket = "backstop-test".to_string();
        let moto = self.moto.then(|| {
            let moto = Moto::start().expect("moto starts");
            if self.execute_state_machines {
                post_json(
                    moto.port,
                    "/moto-api/config",
                    r#"{"stepfunctions":{"execute_state_machine":true}}"#,
                );
            }
            moto
        });
        let local = self.local.map(
            |LocalSetup {
                 mut envs,
                 functions,
             }| {
                for (var, db) in &self.db_url_envs {
                    let pg = pg.as_ref().expect("a database URL needs the cluster");
                    envs.push((var.clone(), pg.url(db)));
                }
                Local::start(
                    pg.as_ref().map(PgCluster::bin_dir),
                    &bucket,
                    &envs,
                    &functions,
                )
            },
        );
        let proxy = match (&self.fault, &moto) {
            (Some(fault), Some(moto)) => Some(FaultProxy::start(moto.port, fault.clone()).unwrap()),
            _ => None,
        };
        let bed = Bed {
            rt,
            bucket,
            pg,
            moto,
            local,
            proxy,
        };
        if bed.moto.is_some() {
            bed.rt
                .block_on(bed.s3().create_bucket().bucket(&bed.bucket).send())
                .expect("bucket created");
        }
        bed
    }
}

/// A POST of a small JSON body to 127.0.0.1:port; panics unless the answer is 2xx.
fn post_json(port: u16, path: &str, body: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 20"), "{out}");
}

/// The servers.
impl Bed {
    pub fn pg(&self) -> &PgCluster {
        self.pg
            .as_ref()
            .expect("the bed has no PostgreSQL: add .postgres()")
    }

    pub fn moto(&self) -> &Moto {
        self.moto
            .as_ref()
            .expect("the bed has no moto: add .moto()")
    }

    pub fn local(&self) -> &Local {
        self.local
            .as_ref()
            .expect("the bed has no local state machine: add .local_state_machine(..)")
    }

    pub fn proxy(&self) -> &FaultProxy {
        self.proxy
            .as_ref()
            .expect("the bed has no fault proxy: add .fault_proxy(..)")
    }

    /// Where AWS is: moto, or the local state machine's moto.
    pub fn endpoint(&self) -> String {
        match (&self.local, &self.moto) {
            (Some(local), _) => local.endpoint(),
            (None, Some(moto)) => moto.endpoint.clone(),
            (None, None) => panic!("the bed has no AWS: add .moto() or .local_state_machine(..)"),
        }
    }

    /// The local state machine's ARN.
    pub fn state_machine_arn(&self) -> String {
        self.local().state_machine_arn()
    }

    /// `backstop` against the bed.
    pub fn cli(&self) -> Cli {
        let mut cli = Cli::new(&self.endpoint(), &self.bucket);
        if let Some(pg) = &self.pg {
            cli = cli.pg(pg);
        }
        if let Some(local) = &self.local {
            cli = cli.with_env("BACKSTOP_STATE_MACHINE_ARN", &local.state_machine_arn());
        }
        cli
    }
}

/// AWS clients and the task context on the bed's endpoint.
impl Bed {
    /// The shared AWS configuration every client of the bed is built from.
    pub fn shared(&self) -> aws_config::SdkConfig {
        shared_at(&self.endpoint(), RetryConfig::standard())
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        let _in = self.rt.enter();
        backstop_core::aws::s3_client(&self.shared())
    }

    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        let _in = self.rt.enter();
        aws_sdk_ec2::Client::new(&self.shared())
    }

    pub fn sfn(&self) -> aws_sdk_sfn::Client {
        let _in = self.rt.enter();
        aws_sdk_sfn::Client::new(&self.shared())
    }

    pub fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        let _in = self.rt.enter();
        aws_sdk_secretsmanager::Client::new(&self.shared())
    }

    /// The configuration of the Lambdas on this bed: its bucket, the default prefix, the
    /// cluster's tools, and the local state machine when there is one.
    pub fn config(&self) -> Config {
        let mut config = Config::new(&self.bucket, PREFIX);
        config.pg_bin_dir = self.pg.as_ref().map(|pg| pg.bin_dir().to_path_buf());
        config.state_machine_arn = self.local.as_ref().map(Local::state_machine_arn);
        config
    }

    /// The Lambdas' task context on the bed's endpoint with `config`.
    pub fn context(&self, config: Config) -> Context {
        let _in = self.rt.enter();
        Context::new(self.shared(), config).unwrap()
    }

    /// Creates a state machine on the bed; its ARN.
    pub fn create_state_machine(&self, name: &str, definition: &str) -> String {
        self.rt
            .block_on(
                self.sfn()
                    .create_state_machine()
                    .name(name)
                    .definition(definition)
                    .role_arn(format!("arn:aws:iam::{}:role/{name}", super::ACCOUNT))
                    .send(),
            )
            .unwrap()
            .state_machine_arn()
            .to_string()
    }
}

/// S3, as it is.
impl Bed {
    /// Every key in the bucket.
    pub fn keys(&self) -> Vec<String> {
        let out = self
            .rt
            .block_on(self.s3().list_objects_v2().bucket(&self.bucket).send())
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        let s3 = self.s3();
        let out = self
            .rt
            .block_on(s3.get_object().bucket(&self.bucket).key(key).send())
            .unwrap_or_else(|e| panic!("GetObject {key}: {e:?}"));
        self.rt
            .block_on(out.body.collect())
            .unwrap()
            .into_bytes()
            .to_vec()
    }

    /// An object parsed as JSON.
    pub fn get_json(&self, key: &str) -> Value {
        serde_json::from_slice(&self.get(key)).unwrap_or_else(|e| panic!("{key} is not JSON: {e}"))
    }

    pub fn put(&self, key: &str, body: Vec<u8>) {
        self.rt
            .block_on(
                self.s3()
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .body(body.into())
                    .send(),
            )
            .unwrap();
    }

    pub fn open_multipart_uploads(&self) -> usize {
        let out = self
            .rt
            .block_on(
                self.s3()
                    .list_multipart_uploads()
                    .bucket(&self.bucket)
                    .send(),
            )
            .unwrap();
        out.uploads().len()
    }

    /// Every manifest in the bucket, parsed.
    pub fn manifests(&self) -> Vec<Value> {
        self.keys()
            .iter()
            .filter(|k| k.ends_with("/manifest.json"))
            .map(|k| self.get_json(k))
            .collect()
    }

    /// The manifest of backup `id` of `application`, as stored.
    pub fn manifest(&self, application: &str, id: &str) -> Value {
        self.get_json(&format!("{PREFIX}/{application}/{id}/manifest.json"))
    }

    /// The dump object of a backup.
    pub fn dump_key(&self, backup_id: &str) -> String {
        self.keys()
            .into_iter()
            .find(|k| k.contains(backup_id) && k.ends_with(".dump"))
            .expect("dump object exists")
    }
}

/// Step Functions, as it is.
impl Bed {
    /// The names of every execution of `state_machine`.
    pub fn executions(&self, state_machine: &str) -> Vec<String> {
        let listed = self
            .rt
            .block_on(
                self.sfn()
                    .list_executions()
                    .state_machine_arn(state_machine)
                    .send(),
            )
            .unwrap();
        listed
            .executions()
            .iter()
            .map(|e| e.name().to_string())
            .collect()
    }

    /// Waits (at most 3 minutes) for an execution to end; its description.
    pub fn finished(&self, arn: &str) -> DescribeExecutionOutput {
        let sfn = self.sfn();
        for _ in 0..1800 {
            let d = self
                .rt
                .block_on(sfn.describe_execution().execution_arn(arn).send())
                .unwrap();
            if d.status().as_str() != "RUNNING" {
                return d;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{arn} still running after 3 minutes");
    }

    /// Every state the execution entered, in order (Map iterations included), from its
    /// history: unlike `backstop run`'s `states`, this also names states that failed.
    pub fn entered(&self, execution_arn: &str) -> Vec<String> {
        let sfn = self.sfn();
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .rt
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

    /// Asserts that the execution entered each of `states`.
    pub fn assert_entered(&self, execution_arn: &str, states: &[&str]) {
        let entered = self.entered(execution_arn);
        for s in states {
            assert!(
                entered.iter().any(|e| e == s),
                "{s} not entered: {entered:?}"
            );
        }
    }
}

/// EC2, as it is.
impl Bed {
    /// An instance with an 8 GiB root (`/dev/sda1`) and a 20 GiB data volume (`/dev/sdf`);
    /// its id.
    pub fn launch_instance(&self) -> String {
        let ebs = |size| EbsBlockDevice::builder().volume_size(size).build();
        let mapping = |device: &str, size| {
            BlockDeviceMapping::builder()
                .device_name(device)
                .ebs(ebs(size))
                .build()
        };
        let out = self
            .rt
            .block_on(
                self.ec2()
                    .run_instances()
                    .image_id("ami-03cf127a")
                    .instance_type(InstanceType::T3Micro)
                    .min_count(1)
                    .max_count(1)
                    .block_device_mappings(mapping("/dev/sda1", 8))
                    .block_device_mappings(mapping("/dev/sdf", 20))
                    .send(),
            )
            .unwrap();
        out.instances()[0].instance_id().unwrap().to_string()
    }

    /// The instance's devices: (device, volume id, the snapshot the volume was created from).
    pub fn devices(&self, id: &str) -> Vec<(String, String, Option<String>)> {
        let ec2 = self.ec2();
        let out = self
            .rt
            .block_on(ec2.describe_instances().instance_ids(id).send())
            .unwrap();
        let inst = &out.reservations()[0].instances()[0];
        inst.block_device_mappings()
            .iter()
            .map(|m| {
                let vol = m.ebs().unwrap().volume_id().unwrap().to_string();
                let described = self
                    .rt
                    .block_on(ec2.describe_volumes().volume_ids(&vol).send())
                    .unwrap();
                let snap = described.volumes()[0].snapshot_id().map(str::to_string);
                (m.device_name().unwrap().to_string(), vol, snap)
            })
            .collect()
    }
}

/// PostgreSQL, as it is.
impl Bed {
    /// Ordered-content checksum of every user table: `schema.table -> md5`.
    pub fn table_checksums(&self, db: &str) -> Vec<(String, String)> {
        table_checksums(self.pg(), db)
    }

    /// Every database on the cluster, sorted.
    pub fn databases(&self) -> Vec<String> {
        self.pg()
            .psql("postgres", "SELECT datname FROM pg_database ORDER BY 1")
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The databases whose name starts with `prefix`, sorted.
    pub fn databases_named(&self, prefix: &str) -> Vec<String> {
        self.databases()
            .into_iter()
            .filter(|d| d.starts_with(prefix))
            .collect()
    }

    /// A directory holding a `pg_dump` that pipes the cluster's real one into `shell_tail`.
    pub fn fake_pg_dump(&self, shell_tail: &str) -> FakeTools {
        FakeTools::pg_dump(self.pg().bin_dir(), shell_tail)
    }
}

/// The events Backstop published, through the dev venv's AWS CLI (moto's SQS and EventBridge).
impl Bed {
    /// `aws ARGS` against the bed's endpoint; its stdout.
    pub fn aws(&self, args: &[&str]) -> String {
        let out = Command::new(Path::new(super::root()).join(".venv/bin/aws"))
            .args([
                "--endpoint-url",
                &self.endpoint(),
                "--region",
                super::REGION,
                "--output",
                "json",
            ])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A queue that receives every event with source `backstop` on the default bus; its URL.
    pub fn events_queue(&self) -> String {
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
            &format!(
                "Id=queue,Arn=arn:aws:sqs:{}:{}:backstop-events",
                super::REGION,
                super::ACCOUNT
            ),
        ]);
        url["QueueUrl"].as_str().unwrap().to_string()
    }

    /// Every event the queue holds (and was not read before): (detail-type, detail).
    pub fn events(&self, queue: &str) -> Vec<(String, Value)> {
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
}

/// Ordered-content checksum of every user table of `db` on `pg`: `schema.table -> md5`.
pub fn table_checksums(pg: &PgCluster, db: &str) -> Vec<(String, String)> {
    let tables = pg
        .psql(
            db,
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog','information_schema') ORDER BY 1",
        )
        .unwrap();
    tables
        .lines()
        .map(|t| {
            let sum = pg
                .psql(
                    db,
                    &format!(
                        "SELECT coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), 'empty') FROM {t} x"
                    ),
                )
                .unwrap();
            (t.to_string(), sum)
        })
        .collect()
}

/// Tags as a map, for comparisons.
pub fn tags_of(tags: &[aws_sdk_ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect()
}
