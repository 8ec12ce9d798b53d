//! `make bench`, the state-transitions figure: one protected deploy of an instance whose
//! snapshots take 30 minutes to complete, run side by side with Backstop's wait schedule
//! (backoff, lengthened by the snapshots' progress), with backoff alone, and with a fixed 15 s
//! poll.
//!
//! Everything is real except time and the snapshots' pending state: `backstop-local` runs
//! moto's Step Functions engine on the real `statemachine/protect.asl.json` (its Wait states
//! patched by `bench/moto-virtual-clock` to advance a virtual clock instead of sleeping), the
//! real start-backup creates the snapshots in moto and records the manifest, and VerifyBackup is
//! real. Moto completes snapshots at once, so start-backup and poll-job are wrapped (this
//! program, `stand-in` mode): until the virtual clock reaches 30 minutes they report the set
//! pending at linear progress in whole percent, as EBS reports it, with the wait the core's
//! `PollPolicy::next_wait_at` suggests; after that the real poll-job answers. The figure is the
//! number of states the execution entered (what Step Functions bills as state transitions),
//! read from its history through `backstop run`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use backstop_core::model::job::{Job, JobReport, JobState, TargetTask};
use backstop_core::tasks::{poll_job, start_backup};
use backstop_core::{Config, Context};
use serde_json::{json, Value};

#[path = "support/local.rs"]
mod local;
use local::{aws_env, project_binary, LocalServer};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// How long the simulated snapshots take.
const SNAPSHOT_SECONDS: u64 = 30 * 60;
/// The goal for one protected deploy with the default schedule.
const GOAL: usize = 40;
const BUCKET: &str = "backstop-local";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [mode, function] if mode == "stand-in" => stand_in(function),
        [] => run(),
        _ => Err("usage: transitions [stand-in start-backup|poll-job]".into()),
    };
    if let Err(e) = result {
        eprintln!("transitions: {e}");
        std::process::exit(1);
    }
}

/// One measured execution.
struct Measure {
    label: &'static str,
    transitions: usize,
    polls: usize,
    virtual_seconds: u64,
    wall_seconds: f64,
}

fn run() -> Result<()> {
    let root = backstop_testbed::workspace_root();
    let exe = std::env::current_exe()?;
    let backstop = project_binary("backstop", "bench-transitions")?;
    let backstop_local = project_binary("backstop-local", "bench-transitions")?;
    let dir = std::env::temp_dir().join(format!("backstop-transitions-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let clock = dir.join("clock");
    std::fs::write(&clock, "0")?;
    let stand_in = |f: &str| format!("backstop-{f}={} stand-in {f}", exe.display());
    let local = LocalServer::start(
        Command::new(&backstop_local)
            .args(["--bucket", BUCKET, "--function"])
            .arg(stand_in("start-backup"))
            .arg("--function")
            .arg(stand_in("poll-job"))
            .env(
                "BACKSTOP_MOTO_SERVER",
                root.join("bench/moto-virtual-clock"),
            )
            .env("BACKSTOP_VIRTUAL_CLOCK", &clock)
            .env("BENCH_DIR", &dir),
    )?;
    std::fs::write(dir.join("endpoint"), &local.endpoint)?;
    let instance = create_instance(&root, &local.endpoint)?;

    // (label, the policy in the run document, whether polls use the snapshots' progress)
    let schedules: [(&str, Value, bool); 3] = [
        ("Backstop's schedule (backoff + progress)", json!({}), true),
        ("backoff alone (progress ignored)", json!({}), false),
        (
            "fixed 15 s poll",
            json!({"first_wait_seconds": 15, "max_wait_seconds": 15}),
            true,
        ),
    ];
    let mut measures = Vec::new();
    for (label, policy, use_progress) in schedules {
        std::fs::write(&clock, "0")?;
        std::fs::write(dir.join("use-progress"), use_progress.to_string())?;
        let doc = json!({
            "application": "bench",
            "version": {"commit": "bench"},
            "targets": [{"type": "instance", "instance_id": instance}],
            "deploy": {"type": "none"},
            "policy": policy,
        });
        let input = dir.join("run.json");
        std::fs::write(&input, doc.to_string())?;
        let started = Instant::now();
        let mut cmd = Command::new(&backstop);
        cmd.args([
            "run",
            "--json",
            "--state-machine-arn",
            &local.state_machine_arn,
            "--input",
        ])
        .arg(&input)
        .env_remove("BACKSTOP_LOG");
        local.aws_env(&mut cmd);
        let out = cmd.output()?;
        let outcome: Value = serde_json::Deserializer::from_slice(&out.stdout)
            .into_iter::<Value>()
            .next()
            .ok_or("backstop run printed nothing")??;
        if outcome["status"] != "SUCCEEDED" {
            return Err(format!(
                "{label}: the execution ended {} {}: {}",
                outcome["status"], outcome["error"], outcome["cause"]
            )
            .into());
        }
        let states: Vec<&str> = outcome["states"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s[0].as_str())
            .collect();
        measures.push(Measure {
            label,
            transitions: states.len(),
            polls: states.iter().filter(|s| **s == "StartBackupPoll").count(),
            virtual_seconds: std::fs::read_to_string(&clock)?.trim().parse()?,
            wall_seconds: started.elapsed().as_secs_f64(),
        });
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "State transitions of one protected deploy (1 instance, snapshots complete after {} min; \
         real ASL on moto, virtual clock):",
        SNAPSHOT_SECONDS / 60
    );
    println!(
        "  {:<42} {:>11} {:>6} {:>14} {:>8}",
        "schedule", "transitions", "polls", "waited (virt.)", "wall"
    );
    for m in &measures {
        println!(
            "  {:<42} {:>11} {:>6} {:>12} s {:>6.1} s",
            m.label, m.transitions, m.polls, m.virtual_seconds, m.wall_seconds
        );
    }
    let (ours, fixed) = (&measures[0], &measures[2]);
    println!(
        "  ratio Backstop/fixed: {:.3} ({} vs {} transitions); goal <= {GOAL}: {}",
        ours.transitions as f64 / fixed.transitions as f64,
        ours.transitions,
        fixed.transitions,
        if ours.transitions <= GOAL {
            "met"
        } else {
            "MISSED"
        }
    );
    for m in &measures {
        println!(
            "RESULT transitions schedule={:?} transitions={} polls={} virtual_seconds={}",
            m.label, m.transitions, m.polls, m.virtual_seconds
        );
    }
    if ours.transitions > GOAL {
        return Err(format!("{} transitions, over the goal of {GOAL}", ours.transitions).into());
    }
    Ok(())
}

fn create_instance(root: &Path, endpoint: &str) -> Result<String> {
    let mut cmd = Command::new(root.join(".venv/bin/aws"));
    cmd.args([
        "ec2",
        "run-instances",
        "--image-id",
        "ami-03cf127a",
        "--instance-type",
        "t3.micro",
        "--block-device-mappings",
        r#"[{"DeviceName":"/dev/sda1","Ebs":{"VolumeSize":8}},{"DeviceName":"/dev/sdf","Ebs":{"VolumeSize":100}}]"#,
        "--query",
        "Instances[0].InstanceId",
        "--output",
        "text",
    ]);
    aws_env(&mut cmd, endpoint);
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("run-instances: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The wrapped start-backup or poll-job: the payload on stdin, the report on stdout.
fn stand_in(function: &str) -> Result<()> {
    let mut payload = String::new();
    std::io::stdin().read_to_string(&mut payload)?;
    let dir = PathBuf::from(std::env::var("BENCH_DIR")?);
    let endpoint = std::fs::read_to_string(dir.join("endpoint"))?;
    let clock: u64 = std::fs::read_to_string(std::env::var("BACKSTOP_VIRTUAL_CLOCK")?)?
        .trim()
        .parse()?;
    let use_progress: bool = std::fs::read_to_string(dir.join("use-progress"))?
        .trim()
        .parse()?;
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(async {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint.trim())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "bench",
            ))
            .load()
            .await;
        let ctx = Context::new(shared, Config::new(BUCKET, "backstop"))?;
        match function {
            // The snapshots were just created: 0 %, the first wait.
            "start-backup" => {
                let task: TargetTask = serde_json::from_str(&payload)?;
                pending(start_backup::handle(&ctx, task).await?, 0, use_progress)
            }
            "poll-job" => {
                let report: JobReport = serde_json::from_str(&payload)?;
                if clock < SNAPSHOT_SECONDS {
                    pending(report, clock, use_progress)
                } else {
                    Ok(poll_job::handle(&ctx, report).await?)
                }
            }
            other => Err(format!("no stand-in for {other}").into()),
        }
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The report of a set still pending `elapsed` seconds into its 30 minutes, with the wait the
/// job's poll policy suggests at that progress (or, `use_progress` false, by backoff alone).
fn pending(report: JobReport, elapsed: u64, use_progress: bool) -> Result<JobReport> {
    let Job::InstanceBackup { poll, .. } = &report.job else {
        return Err("the bench runs one instance target".into());
    };
    let progress = (elapsed * 100 / SNAPSHOT_SECONDS).min(99) as u8;
    let elapsed_time = Duration::from_secs(elapsed);
    let wait = if use_progress {
        poll.next_wait_at(elapsed_time, progress)
    } else {
        poll.next_wait(elapsed_time)
    };
    Ok(JobReport {
        status: JobState::Pending,
        next_wait_seconds: wait.as_secs(),
        progress,
        detail: format!("simulated: {progress}% after {elapsed} s of {SNAPSHOT_SECONDS}"),
        job: report.job,
    })
}
