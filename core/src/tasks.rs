//! The work of the state machine's tasks, one function per Lambda: `start_backup`, `poll_job`,
//! `restore` (one target each) and `verify` (the run document, the backup, the deployment, the
//! restore). Inputs and outputs are small typed JSON documents that carry ids, not manifests;
//! every failure is a named [`Error`] whose `error_type` the state machine's Retry and Catch
//! match. The Lambda binaries and the local invoke router both call these.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::alarms::Alarms;
use crate::backup::{backup_database, BackupRequest};
use crate::catalog::{
    BackupState, Catalog, Deployed, InstanceBackupMode, Manifest, Purpose, DEFAULT_PREFIX,
    MANIFEST_FORMAT,
};
use crate::dbconfig::DbTarget;
use crate::download::DownloadTuning;
use crate::ec2::Ec2;
use crate::error::Error;
use crate::guard::GuardConfig;
use crate::incident::{report_key, write_report, IncidentTask};
use crate::instance_backup::{
    poll_instance_backup, poll_round, record_outcome, record_started, resolve_targets,
    start_instance_backup, InstanceBackupRequest, InstanceJob,
};
use crate::instance_restore::{restore_instance_step, InstanceRestore, InstanceRestoreMode};
use crate::notify::{Notifier, Outcome};
use crate::pg::{check_counts, PgTools, Session};
use crate::pipeline::PipelineJobs;
use crate::poll::{JobStatus, PollPolicy};
use crate::progress::Quiet;
use crate::restore::{restore_database, RestoreMode, RestoreRequest};
use crate::run::{AppVersion, Checks, Deploy, Policy, RunDocument, Target, WaitFor};
use crate::s3::{client_for, S3Store};
use crate::verify::verify_databases;

/// The clients and tools every task needs.
pub struct Context {
    pub catalog: Catalog,
    pub ec2: Ec2,
    pub alarms: Alarms,
    /// CodePipeline, answered by the job worker (pipeline-action).
    pub codepipeline: aws_sdk_codepipeline::Client,
    /// Step Functions, for the execution history an incident report's timeline comes from.
    pub sfn: aws_sdk_sfn::Client,
    /// Where outcomes are published (EventBridge, `BACKSTOP_EVENT_BUS`, default `default`).
    pub events: Notifier,
    /// The protect state machine (`BACKSTOP_STATE_MACHINE_ARN`): pipeline-action starts it,
    /// prune keeps what its running executions use.
    pub state_machine_arn: Option<String>,
    /// The pipeline stages guard mode watches (`BACKSTOP_GUARD_STAGES`).
    pub guard: GuardConfig,
    pub tools: PgTools,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl Context {
    /// From the environment: `BACKSTOP_BUCKET` (required), `BACKSTOP_PREFIX`,
    /// `BACKSTOP_EVENT_BUS` (where outcomes are published, default `default`),
    /// `BACKSTOP_STATE_MACHINE_ARN` (the execution pipeline-action starts),
    /// `BACKSTOP_GUARD_STAGES` (guard mode's `pipeline:stage` list), the standard AWS
    /// configuration, and `PG_BIN_DIR`/`PATH` for the PostgreSQL tools.
    pub async fn from_env() -> Result<Context, Error> {
        let bucket = std::env::var("BACKSTOP_BUCKET").unwrap_or_default();
        let prefix = std::env::var("BACKSTOP_PREFIX").unwrap_or_else(|_| DEFAULT_PREFIX.into());
        let shared = crate::dbconfig::load_aws_config().await;
        let mut ctx = Context::new(&shared, &bucket, &prefix)?;
        if let Ok(bus) = std::env::var("BACKSTOP_EVENT_BUS") {
            if !bus.is_empty() {
                ctx.events = Notifier::new(aws_sdk_eventbridge::Client::new(&shared), bus);
            }
        }
        ctx.state_machine_arn = std::env::var("BACKSTOP_STATE_MACHINE_ARN")
            .ok()
            .filter(|a| !a.is_empty());
        ctx.guard =
            GuardConfig::parse(&std::env::var("BACKSTOP_GUARD_STAGES").unwrap_or_default())?;
        Ok(ctx)
    }

    /// With the clients of a loaded AWS configuration.
    pub fn new(
        shared: &aws_config::SdkConfig,
        bucket: &str,
        prefix: &str,
    ) -> Result<Context, Error> {
        if bucket.trim().is_empty() {
            return Err(Error::InvalidInput(
                "BACKSTOP_BUCKET is not set: the backup bucket".to_string(),
            ));
        }
        Ok(Context {
            catalog: Catalog::new(S3Store::new(client_for(shared), bucket), prefix)?,
            ec2: Ec2::new(aws_sdk_ec2::Client::new(shared), Default::default()),
            alarms: Alarms::new(aws_sdk_cloudwatch::Client::new(shared), Default::default()),
            codepipeline: aws_sdk_codepipeline::Client::new(shared),
            sfn: aws_sdk_sfn::Client::new(shared),
            events: Notifier::new(aws_sdk_eventbridge::Client::new(shared), "default"),
            state_machine_arn: None,
            guard: GuardConfig::default(),
            tools: PgTools::from_env(),
            secrets: crate::dbconfig::secrets_client(shared),
        })
    }

    /// Where a database target is and how to log in.
    pub async fn database(&self, target: &Target) -> Result<DbTarget, Error> {
        let Target::Database {
            secret_id,
            url_env,
            dbname,
        } = target
        else {
            return Err(Error::InvalidInput(format!(
                "{} is not a database",
                target.label()
            )));
        };
        let mut db = match (secret_id, url_env) {
            (Some(secret), None) => {
                DbTarget::from_secret(&self.secrets, secret, dbname.as_deref()).await?
            }
            (None, Some(var)) => {
                let url = std::env::var(var).map_err(|_| {
                    Error::InvalidInput(format!(
                        "url_env {var}: no such environment variable where the task runs"
                    ))
                })?;
                DbTarget::from_url(&url)?
            }
            _ => {
                return Err(Error::InvalidInput(
                    "a database target needs exactly one of secret_id, url_env".to_string(),
                ))
            }
        };
        if let (Some(name), None) = (dbname, secret_id) {
            db.dbname = name.clone();
        }
        Ok(db)
    }
}

/// The input of start-backup and restore: one target of the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetTask {
    pub target: Target,
    pub backup_id: String,
    pub application: String,
    #[serde(default)]
    pub version: AppVersion,
    #[serde(default)]
    pub policy: Policy,
}

/// A job the poll loop follows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Snapshot sets or images of instances.
    InstanceBackup {
        jobs: Vec<InstanceJob>,
        wait_for: WaitFor,
        poll: PollPolicy,
    },
    /// A database dump; finished when start-backup returns.
    DatabaseBackup { backup_id: String, database: String },
    /// Restores of instances, advanced one step per poll.
    InstanceRestore {
        backup_id: String,
        application: String,
        instance_ids: Vec<String>,
        restore_id: String,
        mode: InstanceRestoreMode,
        #[serde(with = "time::serde::rfc3339")]
        started_at: OffsetDateTime,
        poll: PollPolicy,
    },
    /// A database restore; finished when restore returns.
    DatabaseRestore {
        database: String,
        failed_state_database: Option<String>,
    },
}

/// What start-backup, poll-job and restore return: the job and where it stands. The state
/// machine waits `next_wait_seconds` and polls again while `status` is `PENDING`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    pub job: Job,
    /// `PENDING`, `STARTED` (snapshots started and the policy waits for no more) or `COMPLETED`.
    pub status: String,
    pub next_wait_seconds: u64,
    pub progress: u8,
    pub detail: String,
}

fn completed(job: Job, detail: String) -> JobReport {
    JobReport {
        job,
        status: "COMPLETED".to_string(),
        next_wait_seconds: 0,
        progress: 100,
        detail,
    }
}

/// start-backup: backs up one target under the run's backup id. A database is dumped to
/// the end; instances get their snapshot sets (or images) started and polled once.
pub async fn start_backup(ctx: &Context, task: &TargetTask) -> Result<JobReport, Error> {
    let now = OffsetDateTime::now_utc();
    match &task.target {
        Target::Instance {
            instance_id,
            tags,
            mode,
            ..
        } => {
            let ids: Vec<String> = instance_id.iter().cloned().collect();
            let tags: Vec<(String, String)> =
                tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let instances = resolve_targets(&ctx.ec2, &ids, &tags).await?;
            let mut req = InstanceBackupRequest::new(&task.backup_id, &task.application, *mode);
            req.commit = task.version.commit.clone();
            let mut entries = Vec::new();
            for i in &instances {
                entries.push(start_instance_backup(&ctx.ec2, &req, i).await?);
            }
            let manifest = record_started(&ctx.catalog, &req, &entries, now).await?;
            let jobs = entries
                .iter()
                .map(|e| {
                    InstanceJob::of(&task.backup_id, &task.application, e, manifest.started_at)
                })
                .collect();
            let job = Job::InstanceBackup {
                jobs,
                wait_for: task.policy.wait_for,
                poll: task.policy.poll,
            };
            poll_backup(ctx, job).await
        }
        Target::Database { .. } => {
            let db = ctx.database(&task.target).await?;
            let mut req = BackupRequest::new(&task.application);
            req.backup_id = Some(task.backup_id.clone());
            req.app_version = task.version.commit.clone();
            let manifest = backup_database(
                &ctx.catalog,
                &ctx.tools,
                &db,
                &req,
                &Quiet,
                std::future::pending(),
            )
            .await?;
            let bytes = manifest
                .databases
                .iter()
                .find(|d| d.database == db.dbname)
                .map(|d| d.artifact.bytes)
                .unwrap_or_default();
            Ok(completed(
                Job::DatabaseBackup {
                    backup_id: task.backup_id.clone(),
                    database: db.dbname.clone(),
                },
                format!("database {} dumped ({bytes} bytes)", db.dbname),
            ))
        }
    }
}

/// poll-job: one look at a job. A failed or timed-out backup is the error
/// `InstanceBackupFailed` / `TimedOut` (the manifest says `failed`, the snapshots are gone).
pub async fn poll_job(ctx: &Context, report: &JobReport) -> Result<JobReport, Error> {
    match &report.job {
        Job::InstanceBackup { .. } => poll_backup(ctx, report.job.clone()).await,
        Job::InstanceRestore { .. } => advance_restore(ctx, report.job.clone()).await,
        Job::DatabaseBackup { .. } | Job::DatabaseRestore { .. } => {
            Ok(completed(report.job.clone(), report.detail.clone()))
        }
    }
}

async fn poll_backup(ctx: &Context, job: Job) -> Result<JobReport, Error> {
    let Job::InstanceBackup {
        jobs,
        wait_for,
        poll,
    } = &job
    else {
        return Err(Error::InvalidInput(
            "not an instance backup job".to_string(),
        ));
    };
    let refs: Vec<&InstanceJob> = jobs.iter().collect();
    let round = poll_round(
        &ctx.ec2,
        &ctx.catalog,
        &refs,
        poll,
        OffsetDateTime::now_utc(),
    )
    .await?;
    let progress: Vec<u32> = round
        .pending
        .iter()
        .map(|(_, p, _)| u32::from(*p))
        .chain(std::iter::repeat_n(100, round.completed))
        .collect();
    let pending: Vec<String> = round
        .pending
        .iter()
        .map(|(job, _, _)| job.instance_id.clone())
        .collect();
    let wait = round.wait_seconds;
    let mean = progress.iter().sum::<u32>() / progress.len().max(1) as u32;
    if pending.is_empty() {
        return Ok(completed(
            job.clone(),
            format!("{} instance(s) backed up", jobs.len()),
        ));
    }
    let status = match wait_for {
        WaitFor::Started => "STARTED",
        WaitFor::Completed => "PENDING",
    };
    Ok(JobReport {
        job: job.clone(),
        status: status.to_string(),
        next_wait_seconds: wait,
        progress: mean.min(99) as u8,
        detail: format!("snapshots of {} still completing", pending.join(", ")),
    })
}

/// The input of restore.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreTask {
    #[serde(flatten)]
    pub task: TargetTask,
    /// Names this restore run; the same id resumes it.
    pub restore_id: String,
}

/// restore: puts one target back to the backup. A database is restored by swap (the failed
/// one kept); instances start their restore and the poll loop advances it.
pub async fn restore(ctx: &Context, input: &RestoreTask) -> Result<JobReport, Error> {
    let task = &input.task;
    let manifest = ctx
        .catalog
        .manifest(&task.application, &task.backup_id)
        .await?;
    match &task.target {
        Target::Instance {
            instance_id,
            tags,
            restore_mode,
            ..
        } => {
            let instance_ids = instance_ids(ctx, instance_id, tags).await?;
            for id in &instance_ids {
                manifest.instance(id)?;
            }
            let job = Job::InstanceRestore {
                backup_id: task.backup_id.clone(),
                application: task.application.clone(),
                instance_ids,
                restore_id: input.restore_id.clone(),
                mode: *restore_mode,
                started_at: OffsetDateTime::now_utc(),
                poll: task.policy.poll,
            };
            advance_restore(ctx, job).await
        }
        Target::Database { .. } => {
            let db = ctx.database(&task.target).await?;
            let mut req = RestoreRequest::new(&task.backup_id, RestoreMode::Swap);
            req.database = Some(db.dbname.clone());
            let report = restore_database(
                &ctx.catalog,
                &ctx.tools,
                &db,
                &req,
                &Quiet,
                std::future::pending(),
            )
            .await?;
            Ok(completed(
                Job::DatabaseRestore {
                    database: report.database.clone(),
                    failed_state_database: report.failed_state_database.clone(),
                },
                format!(
                    "database {} restored ({} tables match the manifest){}",
                    report.database,
                    report.tables.len(),
                    report
                        .failed_state_database
                        .as_ref()
                        .map(|f| format!("; the failed state is kept as {f}"))
                        .unwrap_or_default()
                ),
            ))
        }
    }
}

/// The instances an instance target names: its id, or every instance its tags match now.
async fn instance_ids(
    ctx: &Context,
    instance_id: &Option<String>,
    tags: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<String>, Error> {
    if let Some(id) = instance_id {
        return Ok(vec![id.clone()]);
    }
    let tags: Vec<(String, String)> = tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(resolve_targets(&ctx.ec2, &[], &tags)
        .await?
        .into_iter()
        .map(|i| i.instance_id)
        .collect())
}

/// One step of every instance's restore; an instance whose snapshots were only started
/// (`wait_for: started`) first waits for them to complete.
async fn advance_restore(ctx: &Context, job: Job) -> Result<JobReport, Error> {
    let Job::InstanceRestore {
        backup_id,
        application,
        instance_ids,
        restore_id,
        mode,
        started_at,
        poll,
    } = &job
    else {
        return Err(Error::InvalidInput(
            "not an instance restore job".to_string(),
        ));
    };
    let now = OffsetDateTime::now_utc();
    let elapsed: Duration = (now - *started_at).try_into().unwrap_or(Duration::ZERO);
    let mut manifest = ctx.catalog.manifest(application, backup_id).await?;
    let mut phases = Vec::new();
    let mut acted = false;
    let mut done = 0;
    for id in instance_ids {
        let mut entry = manifest.instance(id)?.clone();
        if entry.state == BackupState::Pending {
            let bjob = InstanceJob::of(backup_id, application, &entry, manifest.started_at);
            let status = poll_instance_backup(&ctx.ec2, &bjob, &PollPolicy::default(), now).await?;
            if matches!(status, JobStatus::Pending { .. }) {
                phases.push(format!(
                    "{id}: waiting for the backup's snapshots to complete"
                ));
                continue;
            }
            manifest = record_outcome(&ctx.ec2, &ctx.catalog, &bjob, &status, now).await?;
            entry = manifest.instance(id)?.clone();
        }
        let step = restore_instance_step(
            &ctx.ec2,
            &InstanceRestore {
                backup_id,
                entry: &entry,
                restore_id,
                mode: *mode,
            },
        )
        .await?;
        acted |= !step.actions.is_empty();
        if step.done {
            done += 1;
        } else {
            phases.push(format!("{id}: {}", step.phase));
        }
    }
    if done == instance_ids.len() {
        return Ok(completed(
            job.clone(),
            format!("{} instance(s) restored", instance_ids.len()),
        ));
    }
    if poll.expired(elapsed) {
        return Err(Error::TimedOut {
            operation: format!("restore {restore_id} ({})", phases.join("; ")),
            seconds: elapsed.as_secs(),
        });
    }
    Ok(JobReport {
        job: job.clone(),
        status: "PENDING".to_string(),
        next_wait_seconds: if acted {
            1
        } else {
            poll.next_wait(elapsed).as_secs().min(30)
        },
        progress: (done * 100 / instance_ids.len().max(1)) as u8,
        detail: phases.join("; "),
    })
}

/// The input of verify, by mode.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum VerifyTask {
    /// Check the run document and return it with every default filled in.
    Run { document: serde_json::Value },
    /// The backup's artifacts: dumps re-read (size, SHA-256, archive listing), snapshots
    /// present and not failed.
    ///
    /// With the run document, the run is recorded in the manifest once the backup passes, so
    /// guard mode and restore drills know its targets and checks.
    Backup {
        backup_id: String,
        application: String,
        #[serde(default)]
        run: Option<RunDocument>,
    },
    /// The backup failed: record it in the manifest (when one was written), so that the parts
    /// that did finish are never taken for a good backup. Returns the failure's cause.
    BackupFailed {
        backup_id: String,
        application: String,
        #[serde(default)]
        failure: serde_json::Value,
    },
    /// The deployment checks. With the backup id, a pass is recorded in its manifest
    /// (`deployed`): its `app_version` is what runs from then on.
    Deployment {
        run: RunDocument,
        #[serde(default)]
        backup_id: Option<String>,
    },
    /// The deploy failed: write its incident report (JSON and Markdown) beside the backup.
    Incident {
        run: RunDocument,
        backup_id: String,
        execution_arn: String,
        /// `DeployFailed` or `RestoreFailed`.
        outcome: String,
        #[serde(default)]
        failure: serde_json::Value,
        #[serde(default)]
        detail: serde_json::Value,
        #[serde(default)]
        restores: Vec<TargetRestore>,
    },
    /// After a restore: databases hold the manifest's row counts, instances run on volumes
    /// from the backup's snapshots, and the deployment checks pass again. Returns the cause
    /// the execution fails with.
    Restore {
        run: RunDocument,
        backup_id: String,
        #[serde(default)]
        failure: serde_json::Value,
        /// What each iteration of the restore Map reported, in the order of `run.targets`.
        #[serde(default)]
        restores: Vec<TargetRestore>,
    },
}

/// What one iteration of the restore Map reports: its target put back, or the error that
/// stopped it. One target's failure does not stop the others; verify (mode `restore`) sees
/// them all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TargetRestore {
    Completed {
        detail: String,
        /// The finished job: for a database, where its failed state is kept.
        #[serde(default)]
        job: Option<Job>,
    },
    /// `error` and `cause` as Step Functions caught them (`cause` is the function's
    /// `{errorType, errorMessage}` JSON).
    Failed { error: String, cause: String },
}

impl TargetRestore {
    /// `Error: message` of a failed restore, the message taken out of the cause's JSON.
    fn failure(&self) -> Option<String> {
        let TargetRestore::Failed { error, cause } = self else {
            return None;
        };
        let message = serde_json::from_str::<serde_json::Value>(cause)
            .ok()
            .and_then(|v| v.get("errorMessage")?.as_str().map(str::to_string))
            .unwrap_or_else(|| cause.clone());
        Some(format!("{error}: {message}"))
    }
}

/// The cause a `DeployFailed` execution ends with (as JSON): the original failure, the backup,
/// what was restored and the checks after the restore. Verify (mode `restore`) writes it; the
/// incident report and the pipeline worker's summary read it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployFailedCause {
    pub error: String,
    pub cause: String,
    pub backup_id: String,
    #[serde(default)]
    pub restored: Vec<String>,
    #[serde(default)]
    pub checks_after_restore: String,
}

impl DeployFailedCause {
    /// Reads the cause text; `None` when it is not this shape.
    pub fn parse(text: &str) -> Option<DeployFailedCause> {
        serde_json::from_str(text).ok()
    }
}

/// verify's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub summary: String,
    /// Restore mode: the JSON the execution's `DeployFailed` carries as its cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// verify: dispatches on the mode. `Run` returns the normalized run document.
pub async fn verify(ctx: &Context, task: &VerifyTask) -> Result<serde_json::Value, Error> {
    let out = match task {
        VerifyTask::Run { document } => {
            let doc = RunDocument::parse(document.clone())?;
            // An alarm check that selects no alarm could never pass: refuse it before any
            // backup is taken.
            for (n, check) in doc.checks.alarms.iter().enumerate() {
                if ctx.alarms.select(check).await?.is_empty() {
                    return Err(Error::InvalidInput(format!(
                        "checks.alarms[{n}]: {} does not exist",
                        check.label()
                    )));
                }
            }
            return serde_json::to_value(doc)
                .map_err(|e| Error::InvalidInput(format!("run document: {e}")));
        }
        VerifyTask::Backup {
            backup_id,
            application,
            run,
        } => {
            let report = verify_backup_task(ctx, application, backup_id).await?;
            if let Some(run) = run {
                record_run(ctx, application, backup_id, run).await?;
            }
            ctx.events
                .publish(
                    Outcome::BackupCompleted,
                    application,
                    backup_id,
                    &report.summary,
                    serde_json::json!({}),
                )
                .await;
            report
        }
        VerifyTask::BackupFailed {
            backup_id,
            application,
            failure,
        } => record_backup_failure(ctx, application, backup_id, failure).await?,
        VerifyTask::Deployment { run, backup_id } => {
            let summary = run_checks(ctx, run).await?;
            if let Some(id) = backup_id {
                // Without a deploy step the pipeline deploys later (guard mode): what runs now
                // is not yet this run's version.
                if run.deploy != Deploy::None {
                    record_deployed(ctx, &run.application, id, &summary).await?;
                }
                ctx.events
                    .publish(
                        Outcome::DeployProtected,
                        &run.application,
                        id,
                        &summary,
                        serde_json::json!({"commit": run.version.commit}),
                    )
                    .await;
            }
            VerifyReport {
                summary,
                cause: None,
            }
        }
        VerifyTask::Incident {
            run,
            backup_id,
            execution_arn,
            outcome,
            failure,
            detail,
            restores,
        } => {
            let task = IncidentTask {
                run: run.clone(),
                backup_id: backup_id.clone(),
                execution_arn: execution_arn.clone(),
                outcome: outcome.clone(),
                failure: failure.clone(),
                detail: detail.clone(),
                restores: restores.clone(),
            };
            let report = write_report(&ctx.catalog, &ctx.ec2, &ctx.sfn, &task).await?;
            let key = report_key(&ctx.catalog, &run.application, backup_id, "md");
            let (event, summary) = match report.restore_failure {
                None => (
                    Outcome::DeployFailedRestored,
                    format!(
                        "the deploy failed ({}); restored: {}",
                        report.original_error,
                        report.restored.join(", ")
                    ),
                ),
                Some(why) => (
                    Outcome::RestoreFailed,
                    format!(
                        "the deploy failed ({}) and the restore is incomplete: {why}",
                        report.original_error
                    ),
                ),
            };
            ctx.events
                .publish(
                    event,
                    &run.application,
                    backup_id,
                    &summary,
                    serde_json::json!({
                        "commit": run.version.commit,
                        "execution_arn": execution_arn,
                        "incident_report": format!("s3://{}/{key}", ctx.catalog.store.bucket()),
                    }),
                )
                .await;
            VerifyReport {
                summary: format!("incident report written to {key}"),
                cause: None,
            }
        }
        VerifyTask::Restore {
            run,
            backup_id,
            failure,
            restores,
        } => verify_restore(ctx, run, backup_id, failure, restores).await?,
    };
    serde_json::to_value(out).map_err(|e| Error::InvalidInput(e.to_string()))
}

/// Records in the backup's manifest that its deploy passed the checks.
async fn record_deployed(
    ctx: &Context,
    application: &str,
    backup_id: &str,
    checks: &str,
) -> Result<(), Error> {
    amend_manifest(ctx, application, backup_id, |m| {
        m.deployed = Some(Deployed {
            at: OffsetDateTime::now_utc(),
            checks: checks.to_string(),
        })
    })
    .await
}

/// Records in the backup's manifest the run document it protects.
async fn record_run(
    ctx: &Context,
    application: &str,
    backup_id: &str,
    run: &RunDocument,
) -> Result<(), Error> {
    amend_manifest(ctx, application, backup_id, |m| m.run = Some(run.clone())).await
}

/// Changes an existing manifest; `BackupNotFound` when there is none.
async fn amend_manifest(
    ctx: &Context,
    application: &str,
    backup_id: &str,
    change: impl Fn(&mut Manifest),
) -> Result<(), Error> {
    ctx.catalog
        .update_manifest(application, backup_id, |current| {
            let mut m = current.ok_or_else(|| Error::BackupNotFound {
                bucket: ctx.catalog.store.bucket().to_string(),
                prefix: ctx.catalog.prefix.clone(),
                backup_id: backup_id.to_string(),
            })?;
            change(&mut m);
            Ok(m)
        })
        .await?;
    Ok(())
}

async fn record_backup_failure(
    ctx: &Context,
    application: &str,
    backup_id: &str,
    failure: &serde_json::Value,
) -> Result<VerifyReport, Error> {
    let text = |key: &str| failure.get(key).and_then(|v| v.as_str()).unwrap_or("");
    let reason: String = format!("{}: {}", text("Error"), text("Cause"))
        .chars()
        .take(2000)
        .collect();
    // Written even when no part wrote a manifest yet: a part still finishing merges into a
    // failed manifest and cannot make it look good.
    ctx.catalog
        .update_manifest(application, backup_id, |current| {
            let now = OffsetDateTime::now_utc();
            let mut m = current.unwrap_or_else(|| Manifest {
                format_version: MANIFEST_FORMAT,
                backup_id: backup_id.to_string(),
                application: application.to_string(),
                app_version: None,
                purpose: Purpose::Backup,
                state: BackupState::Failed,
                started_at: now,
                finished_at: now,
                databases: Vec::new(),
                instances: Vec::new(),
                error: None,
                deployed: None,
                run: None,
            });
            m.state = BackupState::Failed;
            m.error.get_or_insert_with(|| reason.clone());
            m.finished_at = now;
            Ok(m)
        })
        .await?;
    let summary = format!("backup {backup_id} marked failed");
    ctx.events
        .publish(
            Outcome::BackupFailed,
            application,
            backup_id,
            &reason,
            serde_json::json!({}),
        )
        .await;
    Ok(VerifyReport {
        summary,
        cause: Some(reason),
    })
}

async fn verify_backup_task(
    ctx: &Context,
    application: &str,
    backup_id: &str,
) -> Result<VerifyReport, Error> {
    let manifest = ctx.catalog.manifest(application, backup_id).await?;
    if manifest.state == BackupState::Failed {
        return Err(Error::BackupNotUsable {
            backup_id: backup_id.to_string(),
            state: format!(
                "failed: {}",
                manifest.error.as_deref().unwrap_or("no reason recorded")
            ),
        });
    }
    let report = verify_databases(
        &ctx.catalog,
        &ctx.tools,
        &manifest,
        None,
        DownloadTuning::default(),
        &Quiet,
    )
    .await?;
    let mut lines: Vec<String> = report
        .databases
        .iter()
        .map(|d| format!("{}: {} bytes, SHA-256 matches", d.database, d.bytes))
        .collect();
    let now = OffsetDateTime::now_utc();
    for entry in &manifest.instances {
        let job = InstanceJob::of(backup_id, application, entry, manifest.started_at);
        let status = poll_instance_backup(&ctx.ec2, &job, &PollPolicy::default(), now).await?;
        if let JobStatus::Failed { reason } = status {
            return Err(Error::InstanceBackupFailed {
                backup_id: backup_id.to_string(),
                instance_id: entry.instance_id.clone(),
                reason,
            });
        }
        lines.push(format!(
            "{}: {} snapshot(s) {}",
            entry.instance_id,
            entry.volumes.len(),
            match (entry.state, entry.mode) {
                (BackupState::Completed, _) => "completed",
                (_, InstanceBackupMode::Image) => "in a pending image",
                _ => "started",
            }
        ));
    }
    Ok(VerifyReport {
        summary: lines.join("; "),
        cause: None,
    })
}

/// Runs every check until each has passed `consecutive` times in a row over at least
/// `bake_seconds`; the first failure is `VerificationFailed`.
pub async fn run_checks(ctx: &Context, run: &RunDocument) -> Result<String, Error> {
    let checks = &run.checks;
    if checks.http.is_empty() && checks.sql.is_empty() && checks.alarms.is_empty() {
        return Ok("no checks configured".to_string());
    }
    let started = std::time::Instant::now();
    let mut passes = 0;
    loop {
        check_round(ctx, run, checks).await?;
        passes += 1;
        if passes >= checks.consecutive && started.elapsed().as_secs() >= checks.bake_seconds {
            break;
        }
        tokio::time::sleep(Duration::from_secs(checks.interval_seconds)).await;
    }
    Ok(format!(
        "{} HTTP, {} SQL and {} alarm check(s) passed {passes} time(s) in a row over {} s",
        checks.http.len(),
        checks.sql.len(),
        checks.alarms.len(),
        started.elapsed().as_secs()
    ))
}

async fn check_round(ctx: &Context, run: &RunDocument, checks: &Checks) -> Result<(), Error> {
    for h in &checks.http {
        let (status, body) = crate::http::get(&h.url, Duration::from_secs(10)).await?;
        if status != h.expect_status {
            return Err(Error::VerificationFailed(format!(
                "GET {} answered {status}, expected {}",
                h.url, h.expect_status
            )));
        }
        if let Some(want) = &h.body_contains {
            if !body.contains(want.as_str()) {
                return Err(Error::VerificationFailed(format!(
                    "GET {} answered {status} without {want:?} in its body",
                    h.url
                )));
            }
        }
    }
    for a in &checks.alarms {
        ctx.alarms.check(a).await?;
    }
    for q in &checks.sql {
        let target = sql_target(ctx, run, q.database.as_deref()).await?;
        let db = ctx.database(target).await?;
        let session = Session::connect(&db).await?;
        let got = session
            .query_first_text(&q.query)
            .await
            .map_err(|e| Error::VerificationFailed(format!("{} on {}: {e}", q.query, db.dbname)))?;
        if got.as_deref() != Some(q.expect.as_str()) {
            return Err(Error::VerificationFailed(format!(
                "{} on {} gave {}, expected {:?}",
                q.query,
                db.dbname,
                got.map(|g| format!("{g:?}"))
                    .unwrap_or_else(|| "no value".to_string()),
                q.expect
            )));
        }
    }
    Ok(())
}

/// The database target a SQL check names, or the only one. The name is the target's
/// `dbname`, `url_env` or `secret_id` as written, or else the name of the database it
/// resolves to (the one in the URL or the secret).
async fn sql_target<'r>(
    ctx: &Context,
    run: &'r RunDocument,
    name: Option<&str>,
) -> Result<&'r Target, Error> {
    let dbs: Vec<&Target> = run
        .targets
        .iter()
        .filter(|t| matches!(t, Target::Database { .. }))
        .collect();
    let Some(n) = name else {
        return match dbs.as_slice() {
            [only] => Ok(only),
            _ => Err(Error::InvalidInput(
                "a SQL check must name its database when the run has several".to_string(),
            )),
        };
    };
    let declared = dbs.iter().find(|t| match t {
        Target::Database {
            dbname,
            url_env,
            secret_id,
        } => [dbname, url_env, secret_id]
            .iter()
            .any(|v| v.as_deref() == Some(n)),
        _ => false,
    });
    if let Some(t) = declared {
        return Ok(t);
    }
    for t in dbs {
        if ctx.database(t).await?.dbname == n {
            return Ok(t);
        }
    }
    Err(Error::InvalidInput(format!("no database target named {n}")))
}

async fn verify_restore(
    ctx: &Context,
    run: &RunDocument,
    backup_id: &str,
    failure: &serde_json::Value,
    restores: &[TargetRestore],
) -> Result<VerifyReport, Error> {
    let manifest = ctx.catalog.manifest(&run.application, backup_id).await?;
    let original = |key: &str| failure.get(key).and_then(|v| v.as_str()).unwrap_or("");
    let why = format!(
        "the restore ran because the deploy failed with {}: {}",
        original("Error"),
        original("Cause").chars().take(2000).collect::<String>()
    );
    let mut restored = Vec::new();
    let mut not_restored = Vec::new();
    for (i, t) in run.targets.iter().enumerate() {
        if let Some(f) = restores.get(i).and_then(TargetRestore::failure) {
            not_restored.push(format!("{} was not restored ({f})", t.label()));
            continue;
        }
        match verify_restored_target(ctx, &manifest, t).await {
            Ok(lines) => restored.extend(lines),
            Err(e @ Error::Throttled { .. }) => return Err(e),
            Err(e) => not_restored.push(format!(
                "{} does not match the backup after its restore ({})",
                t.label(),
                crate::error::Named(&e)
            )),
        }
    }
    let restored_text = if restored.is_empty() {
        "nothing".to_string()
    } else {
        restored.join(", ")
    };
    if !not_restored.is_empty() {
        return Err(Error::RestoreIncomplete(format!(
            "{}; restored: {restored_text}; {why}",
            not_restored.join("; ")
        )));
    }
    // Checks that still fail once every target is back mean the restore did not bring the
    // service back: the execution fails with RestoreFailed, whose cause is this error alone,
    // so it says what was restored and why the restore ran.
    let checks = run_checks(ctx, run).await.map_err(|e| match e {
        Error::VerificationFailed(m) => Error::VerificationFailed(format!(
            "{m}, still after the restore ({restored_text}); {why}"
        )),
        other => other,
    })?;
    let cause = DeployFailedCause {
        error: original("Error").to_string(),
        cause: original("Cause").to_string(),
        backup_id: backup_id.to_string(),
        restored,
        checks_after_restore: checks.clone(),
    };
    Ok(VerifyReport {
        summary: format!("restored: {restored_text}; {checks}"),
        cause: Some(
            serde_json::to_string(&cause)
                .map_err(|e| Error::InvalidInput(format!("deploy failure cause: {e}")))?,
        ),
    })
}

/// Checks one restored target against the manifest: a database holds the backup's row
/// counts; each instance runs, every backed-up device on a volume made from its snapshot.
async fn verify_restored_target(
    ctx: &Context,
    manifest: &Manifest,
    target: &Target,
) -> Result<Vec<String>, Error> {
    match target {
        Target::Database { .. } => {
            let db = ctx.database(target).await?;
            let entry = manifest
                .databases
                .iter()
                .find(|d| d.database == db.dbname)
                .ok_or_else(|| Error::BackupNotUsable {
                    backup_id: manifest.backup_id.clone(),
                    state: format!("holds no database {}", db.dbname),
                })?;
            let session = Session::connect(&db).await?;
            check_counts(
                &entry.tables,
                &session.row_counts().await?,
                &db.dbname,
                false,
            )?;
            Ok(vec![format!(
                "database {} ({} tables, row counts match the backup)",
                db.dbname,
                entry.tables.len()
            )])
        }
        Target::Instance {
            instance_id, tags, ..
        } => {
            let mut lines = Vec::new();
            for id in instance_ids(ctx, instance_id, tags).await? {
                let entry = manifest.instance(&id)?;
                let instance = ctx.ec2.instance(&id).await?;
                if instance.state != "running" {
                    return Err(Error::VerificationFailed(format!(
                        "instance {id} is {} after the restore",
                        instance.state
                    )));
                }
                let attached: Vec<String> = instance.devices.values().cloned().collect();
                let volumes = ctx.ec2.volumes(&attached).await?;
                for v in &entry.volumes {
                    let now = instance.devices.get(&v.device);
                    let from = now.and_then(|vid| {
                        volumes
                            .iter()
                            .find(|x| x.volume_id() == Some(vid.as_str()))
                            .and_then(|x| x.snapshot_id())
                    });
                    if v.snapshot_id.is_some() && from != v.snapshot_id.as_deref() {
                        return Err(Error::VerificationFailed(format!(
                            "{id} {} is not on a volume from snapshot {}",
                            v.device,
                            v.snapshot_id.as_deref().unwrap_or("?")
                        )));
                    }
                }
                lines.push(format!(
                    "instance {id} ({} volumes from the backup's snapshots, running)",
                    entry.volumes.len()
                ));
            }
            Ok(lines)
        }
    }
}

/// The input of prune (the retention schedule's event).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneTask {
    pub keep_last: usize,
    pub max_age_days: u64,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub application: Option<String>,
}

/// prune: applies the retention policy (or, in a dry run, only plans it) and returns the plan.
/// The servers searched for left databases are those of the database targets the catalog's
/// recorded runs name; one that cannot be resolved here is listed in `servers_skipped`.
pub async fn prune(ctx: &Context, task: &PruneTask) -> Result<crate::retention::Plan, Error> {
    let running = match &ctx.state_machine_arn {
        Some(arn) => crate::retention::running_executions(&ctx.sfn, arn).await?,
        None => Vec::new(),
    };
    let policy = crate::retention::RetentionPolicy {
        keep_last: task.keep_last,
        max_age: Duration::from_secs(task.max_age_days.saturating_mul(86_400)),
    };
    let mut servers: Vec<DbTarget> = Vec::new();
    let mut unresolved = Vec::new();
    let mut seen = Vec::new();
    let manifests = ctx.catalog.list(task.application.as_deref()).await?;
    for m in &manifests {
        for target in m.run.iter().flat_map(|r| r.targets.iter()) {
            if !matches!(target, Target::Database { .. }) || seen.contains(target) {
                continue;
            }
            seen.push(target.clone());
            match ctx.database(target).await {
                Ok(db) if !servers.contains(&db) => servers.push(db),
                Ok(_) => {}
                Err(e) => {
                    unresolved.push(format!("{}: {}", target.label(), crate::error::Named(&e)))
                }
            }
        }
    }
    let mut plan = crate::retention::plan(
        &manifests,
        &ctx.ec2,
        &policy,
        &running,
        &servers,
        OffsetDateTime::now_utc(),
    )
    .await?;
    plan.servers_skipped.extend(unresolved);
    if !task.dry_run {
        crate::retention::apply(&ctx.catalog, &ctx.ec2, &plan, &servers).await?;
    }
    Ok(plan)
}

/// Every Lambda function, by name: the state machine's tasks, the pipeline worker, and the
/// scheduled and event-driven ones.
pub const FUNCTIONS: [&str; 8] = [
    "start-backup",
    "poll-job",
    "restore",
    "verify",
    "pipeline-action",
    "prune",
    "guard",
    "drill",
];

/// Runs function `name` on a JSON payload: what each Lambda does, and what the local invoke
/// router serves. A payload that is not the function's input is `InvalidInput`.
pub async fn invoke(
    ctx: &Context,
    name: &str,
    payload: serde_json::Value,
) -> Result<serde_json::Value, Error> {
    fn input<T: serde::de::DeserializeOwned>(
        name: &str,
        payload: serde_json::Value,
    ) -> Result<T, Error> {
        serde_json::from_value(payload)
            .map_err(|e| Error::InvalidInput(format!("{name} input: {e}")))
    }
    fn output<T: Serialize>(value: T) -> Result<serde_json::Value, Error> {
        serde_json::to_value(value).map_err(|e| Error::InvalidInput(e.to_string()))
    }
    match name {
        "start-backup" => output(start_backup(ctx, &input(name, payload)?).await?),
        "poll-job" => output(poll_job(ctx, &input(name, payload)?).await?),
        "restore" => output(restore(ctx, &input(name, payload)?).await?),
        "verify" => verify(ctx, &input(name, payload)?).await,
        "pipeline-action" => output(
            PipelineJobs::new(
                ctx.codepipeline.clone(),
                ctx.sfn.clone(),
                ctx.state_machine_arn.clone(),
            )
            .handle(payload)
            .await?,
        ),
        "prune" => output(prune(ctx, &input(name, payload)?).await?),
        "drill" => output(crate::drill::run(ctx, &input(name, payload)?).await?),
        "guard" => output(
            crate::guard::handle(
                &ctx.catalog,
                &ctx.sfn,
                &ctx.events,
                ctx.state_machine_arn.as_deref(),
                &ctx.guard,
                payload,
            )
            .await?,
        ),
        other => Err(Error::InvalidInput(format!(
            "no function {other:?} (there are {})",
            FUNCTIONS.join(", ")
        ))),
    }
}
