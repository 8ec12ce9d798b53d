//! verify, mode `incident` (ReportDeployFailure, ReportRestoreFailure): every failed deploy
//! gets its incident report, JSON and Markdown, beside the backup's manifest, and
//! `DeployFailedRestored` or `RestoreFailed` is published. The report holds the timeline of
//! the execution's states (from its history), the original error, what the checks saw, what
//! was restored and how long the restore took, where the failed state is kept, and the
//! versions involved: the commit the backup holds (the last deploy of the application that
//! passed its checks) against the deploy's. `backstop incidents list/show` reads them back.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::aws::ec2::{Ec2, TAG_FAILED_STATE_OF, TAG_REPLACED_IN};
use crate::aws::events::{EventDetail, Outcome};
use crate::aws::sfn::history;
use crate::catalog::Catalog;
use crate::context::Context;
use crate::error::Error;
use crate::model::incident::{
    markdown, IncidentOutcome, IncidentReport, TimelineEntry, Versions, INCIDENT_FORMAT,
};
use crate::model::job::{diagnostic_text, DeployFailedCause, Job, StepFailure, TargetRestore};
use crate::model::manifest::Manifest;
use crate::model::run::RunDocument;
use crate::tasks::verify::VerifyReport;

/// What verify (mode `incident`) gets.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentTask {
    pub run: RunDocument,
    pub backup_id: String,
    pub execution_arn: String,
    pub outcome: IncidentOutcome,
    /// The caught error that started the restore path.
    #[serde(default)]
    pub failure: StepFailure,
    #[serde(default)]
    pub detail: Option<IncidentDetail>,
    /// DeployFailed: what each target's restore reported (it names the kept failed state).
    #[serde(default)]
    pub restores: Vec<TargetRestore>,
}

/// What the state machine adds to the failure, by outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IncidentDetail {
    /// DeployFailed: the cause VerifyRestore built (a [`DeployFailedCause`] as JSON text).
    Cause(String),
    /// RestoreFailed: the restore's error as the state machine caught it.
    Caught(StepFailure),
}

/// Writes the report and publishes the outcome.
pub async fn handle(ctx: &Context, task: IncidentTask) -> Result<VerifyReport, Error> {
    let catalog = ctx.catalog();
    let report = write_report(catalog, ctx.ec2(), ctx.sfn(), &task).await?;
    let run = &task.run;
    let key = catalog.incident_key(&run.application, &task.backup_id, "md");
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
    let mut detail = EventDetail::new(summary, &run.application, &task.backup_id);
    detail.commit = run.version.commit.clone();
    detail.execution_arn = Some(task.execution_arn.clone());
    detail.incident_report = Some(format!("s3://{}/{key}", catalog.store.bucket()));
    ctx.events().publish(event, &detail).await;
    Ok(VerifyReport::summary(format!(
        "incident report written to {key}"
    )))
}

/// Builds the report of a failed deploy and writes it (JSON and Markdown) into the catalog.
pub async fn write_report(
    catalog: &Catalog,
    ec2: &Ec2,
    sfn: &aws_sdk_sfn::Client,
    task: &IncidentTask,
) -> Result<IncidentReport, Error> {
    let app = &task.run.application;
    let manifest = catalog.manifest(app, &task.backup_id).await?;
    let timeline = timeline(sfn, &task.execution_arn).await?;
    let original_error = task.failure.error.clone();
    let original_cause = diagnostic_text(&task.failure.cause);
    let mut checks = Vec::new();
    if original_error == "VerificationFailed" {
        checks.push(format!("after the deploy: {original_cause}"));
    }
    let mut restored = Vec::new();
    let mut restore_failure = None;
    match (task.outcome, &task.detail) {
        (IncidentOutcome::DeployFailed, detail) => {
            let cause = match detail {
                Some(IncidentDetail::Cause(text)) => DeployFailedCause::parse(text),
                _ => None,
            }
            .unwrap_or_default();
            restored = cause.restored;
            if !cause.checks_after_restore.is_empty() {
                checks.push(format!("after the restore: {}", cause.checks_after_restore));
            }
        }
        (IncidentOutcome::RestoreFailed, detail) => {
            let cause = match detail {
                Some(IncidentDetail::Caught(f)) => f.cause.as_str(),
                _ => "",
            };
            restore_failure = Some(diagnostic_text(cause));
        }
    }
    let restore_seconds = span(&timeline, "RestoreTargets", "VerifyRestore");
    let report = IncidentReport {
        format_version: INCIDENT_FORMAT,
        application: app.clone(),
        backup_id: task.backup_id.clone(),
        execution_arn: task.execution_arn.clone(),
        outcome: task.outcome,
        written_at: OffsetDateTime::now_utc(),
        versions: Versions {
            deploy_commit: task.run.version.commit.clone(),
            backup_commit: running_before(catalog, &manifest).await?,
            pipeline_execution_id: task.run.version.pipeline_execution_id.clone(),
        },
        original_error,
        original_cause,
        checks,
        restored: restored.clone(),
        restore_failure,
        restore_seconds,
        failed_state: failed_state(ec2, &task.backup_id, &task.restores).await?,
        timeline,
    };
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| Error::InvalidInput(format!("incident report: {e}")))?;
    catalog
        .store
        .put_bytes(
            &catalog.incident_key(app, &task.backup_id, "json"),
            json,
            "application/json",
        )
        .await?;
    catalog
        .store
        .put_bytes(
            &catalog.incident_key(app, &task.backup_id, "md"),
            markdown(&report).into_bytes(),
            "text/markdown; charset=utf-8",
        )
        .await?;
    Ok(report)
}

/// The commit of the application's newest earlier backup whose deploy passed its checks.
async fn running_before(catalog: &Catalog, this: &Manifest) -> Result<Option<String>, Error> {
    Ok(catalog
        .list(Some(&this.application))
        .await?
        .manifests
        .into_iter()
        .filter(|m| m.backup_id != this.backup_id && m.started_at <= this.started_at)
        .find(|m| m.deployed.is_some())
        .and_then(|m| m.app_version))
}

/// The failed state kept: the databases the restore jobs kept, and the volumes a restore
/// under this id replaced.
async fn failed_state(
    ec2: &Ec2,
    restore_id: &str,
    restores: &[TargetRestore],
) -> Result<Vec<String>, Error> {
    let mut kept: Vec<String> = restores
        .iter()
        .filter_map(|r| match r {
            TargetRestore::Completed {
                job:
                    Some(Job::DatabaseRestore {
                        failed_state_database: Some(name),
                        server,
                        ..
                    }),
                ..
            } => Some(match server.as_str() {
                // A job recorded before databases were identified with their server.
                "" => format!("database {name}"),
                server => format!("database {name} on {server}"),
            }),
            _ => None,
        })
        .collect();
    let out = ec2
        .call("DescribeVolumes", |c| {
            c.describe_volumes()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name(format!("tag:{TAG_REPLACED_IN}"))
                        .values(restore_id)
                        .build(),
                )
                .send()
        })
        .await?;
    for v in out.volumes() {
        let of = v
            .tags()
            .iter()
            .find(|t| t.key() == Some(TAG_FAILED_STATE_OF))
            .and_then(|t| t.value());
        if let (Some(id), Some(of)) = (v.volume_id(), of) {
            kept.push(format!("volume {id} (the failed state of {of})"));
        }
    }
    Ok(kept)
}

/// Seconds from the first entry of `from` to the first entry of `to` (or `from`'s exit).
fn span(timeline: &[TimelineEntry], from: &str, to: &str) -> Option<f64> {
    let start = timeline.iter().find(|e| e.state == from)?;
    let end = timeline
        .iter()
        .find(|e| e.state == to)
        .map(|e| e.entered_at)
        .or(start.exited_at)?;
    Some((end - start.entered_at).as_seconds_f64())
}

/// The execution's states in the order first entered, each with its first entry, last exit
/// and how many times it was entered.
async fn timeline(sfn: &aws_sdk_sfn::Client, arn: &str) -> Result<Vec<TimelineEntry>, Error> {
    let mut entries: Vec<TimelineEntry> = Vec::new();
    for e in history(sfn, arn).await? {
        let at = OffsetDateTime::from_unix_timestamp_nanos(e.timestamp().as_nanos())
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        if let Some(d) = e.state_entered_event_details() {
            match entries.iter_mut().find(|x| x.state == d.name()) {
                Some(x) => x.times += 1,
                None => entries.push(TimelineEntry {
                    state: d.name().to_string(),
                    entered_at: at,
                    exited_at: None,
                    times: 1,
                }),
            }
        } else if let Some(d) = e.state_exited_event_details() {
            if let Some(x) = entries.iter_mut().find(|x| x.state == d.name()) {
                x.exited_at = Some(at);
            }
        }
    }
    Ok(entries)
}
