//! Incident reports: for every deploy that failed (restored, or not), a JSON report and its
//! Markdown rendering written into the catalog beside the backup's manifest
//! (`incident.json`, `incident.md`). A report holds the timeline of the execution's states
//! (from its history), the original error, what the checks saw, what was restored and how long
//! the restore took, where the failed state is kept, and the versions involved: the commit the
//! backup holds (the last deploy of the application that passed its checks) against the
//! deploy's. `backstop incidents list/show` reads them back.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::catalog::{Catalog, Manifest};
use crate::ec2::{Ec2, TAG_FAILED_STATE_OF};
use crate::error::Error;
use crate::instance_restore::TAG_REPLACED_IN;
use crate::pipeline::diagnostic_text;
use crate::run::RunDocument;
use crate::tasks::{DeployFailedCause, Job, TargetRestore};

/// The report format this code writes and reads.
pub const INCIDENT_FORMAT: u32 = 1;

/// One failed deploy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentReport {
    pub format_version: u32,
    pub application: String,
    pub backup_id: String,
    pub execution_arn: String,
    /// `DeployFailed` (restored) or `RestoreFailed` (not everything is back).
    pub outcome: String,
    #[serde(with = "time::serde::rfc3339")]
    pub written_at: OffsetDateTime,
    pub versions: Versions,
    /// The error that sent the execution into the restore path, and its cause.
    pub original_error: String,
    pub original_cause: String,
    /// What the checks saw: the failing check (when checks failed) and the checks after the
    /// restore.
    pub checks: Vec<String>,
    pub restored: Vec<String>,
    /// Why the restore is incomplete, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_failure: Option<String>,
    /// Seconds from entering the restore path to leaving it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_seconds: Option<f64>,
    /// Where the failed state is kept: databases, replaced volumes.
    pub failed_state: Vec<String>,
    pub timeline: Vec<TimelineEntry>,
}

/// The versions involved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// What the deploy brought.
    pub deploy_commit: Option<String>,
    /// What ran before it, which the backup holds: the commit of the application's last deploy
    /// that passed its checks, when Backstop protected it.
    pub backup_commit: Option<String>,
    pub pipeline_execution_id: Option<String>,
}

/// One state of the execution; a state entered several times (a poll loop) is one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub state: String,
    #[serde(with = "time::serde::rfc3339")]
    pub entered_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub exited_at: Option<OffsetDateTime>,
    pub times: u32,
}

/// What verify (mode `incident`) gets.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentTask {
    pub run: RunDocument,
    pub backup_id: String,
    pub execution_arn: String,
    /// `DeployFailed` or `RestoreFailed`.
    pub outcome: String,
    /// The caught error that started the restore path (`Error`, `Cause`).
    #[serde(default)]
    pub failure: serde_json::Value,
    /// DeployFailed: the cause VerifyRestore built; RestoreFailed: the caught restore error.
    #[serde(default)]
    pub detail: serde_json::Value,
    /// DeployFailed: what each target's restore reported (it names the kept failed state).
    #[serde(default)]
    pub restores: Vec<TargetRestore>,
}

/// The catalog key of a backup's incident report.
pub fn report_key(catalog: &Catalog, application: &str, backup_id: &str, ext: &str) -> String {
    format!(
        "{}/incident.{ext}",
        catalog.backup_dir(application, backup_id)
    )
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
    let text = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let original_error = text(&task.failure, "Error");
    let original_cause = diagnostic_text(&text(&task.failure, "Cause"));
    let mut checks = Vec::new();
    if original_error == "VerificationFailed" {
        checks.push(format!("after the deploy: {original_cause}"));
    }
    let mut restored = Vec::new();
    let mut restore_failure = None;
    match task.outcome.as_str() {
        "DeployFailed" => {
            let cause = task
                .detail
                .as_str()
                .and_then(DeployFailedCause::parse)
                .unwrap_or_default();
            restored = cause.restored;
            if !cause.checks_after_restore.is_empty() {
                checks.push(format!("after the restore: {}", cause.checks_after_restore));
            }
        }
        _ => {
            restore_failure = Some(diagnostic_text(&text(&task.detail, "Cause")));
        }
    }
    let restore_seconds = span(&timeline, "RestoreTargets", "VerifyRestore");
    let report = IncidentReport {
        format_version: INCIDENT_FORMAT,
        application: app.clone(),
        backup_id: task.backup_id.clone(),
        execution_arn: task.execution_arn.clone(),
        outcome: task.outcome.clone(),
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
            &report_key(catalog, app, &task.backup_id, "json"),
            json,
            "application/json",
        )
        .await?;
    catalog
        .store
        .put_bytes(
            &report_key(catalog, app, &task.backup_id, "md"),
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
                        ..
                    }),
                ..
            } => Some(format!("database {name}")),
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
    let mut token = None;
    loop {
        let page = sfn
            .get_execution_history()
            .execution_arn(arn)
            .max_results(1000)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| crate::executions::sfn_error("GetExecutionHistory", &e))?;
        for e in page.events() {
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
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(entries);
        }
    }
}

/// The report as Markdown.
pub fn markdown(r: &IncidentReport) -> String {
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".to_string());
    let list = |items: &[String]| {
        if items.is_empty() {
            "- none\n".to_string()
        } else {
            items.iter().map(|i| format!("- {i}\n")).collect()
        }
    };
    let mut md = format!(
        "# Incident: {} deploy {} ({})\n\n\
         - Backup: `{}`\n- Execution: `{}`\n- Written: {}\n\n\
         ## Versions\n\n- Deployed: {}\n- In the backup (running before): {}\n- Pipeline execution: {}\n\n\
         ## Original error\n\n{}\n\n## Checks\n\n{}\n## Restored",
        r.application,
        or_none(&r.versions.deploy_commit),
        r.outcome,
        r.backup_id,
        r.execution_arn,
        rfc3339(r.written_at),
        or_none(&r.versions.deploy_commit),
        r.versions.backup_commit.clone().unwrap_or_else(|| {
            "unknown (no earlier deploy of this application passed its checks under Backstop)"
                .to_string()
        }),
        or_none(&r.versions.pipeline_execution_id),
        if r.original_cause.starts_with(&format!("{}:", r.original_error)) {
            r.original_cause.clone()
        } else {
            format!("{}: {}", r.original_error, r.original_cause)
        },
        list(&r.checks),
    );
    if let Some(s) = r.restore_seconds {
        md.push_str(&format!(" (in {s:.1} s)"));
    }
    md.push_str(&format!("\n\n{}", list(&r.restored)));
    if let Some(f) = &r.restore_failure {
        md.push_str(&format!("\n**Not everything was restored:** {f}\n"));
    }
    md.push_str(&format!(
        "\n## Failed state kept\n\n{}\n## Timeline\n\n| state | entered | left | times |\n|---|---|---|---|\n",
        list(&r.failed_state)
    ));
    for e in &r.timeline {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            e.state,
            rfc3339(e.entered_at),
            e.exited_at.map(rfc3339).unwrap_or_else(|| "-".to_string()),
            e.times
        ));
    }
    md
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Every incident report (of one application, when given), newest first.
pub async fn list(
    catalog: &Catalog,
    application: Option<&str>,
) -> Result<Vec<IncidentReport>, Error> {
    let mut reports = catalog
        .objects_named(application, "incident.json")
        .await?
        .into_iter()
        .map(|(key, body)| parse(catalog, &key, &body))
        .collect::<Result<Vec<_>, _>>()?;
    reports.sort_by_key(|r| std::cmp::Reverse(r.written_at));
    Ok(reports)
}

/// The report of one backup (found in any application), and its Markdown.
pub async fn show(catalog: &Catalog, backup_id: &str) -> Result<(IncidentReport, String), Error> {
    let manifest = catalog.find(backup_id).await?;
    let key = report_key(catalog, &manifest.application, backup_id, "json");
    let body = catalog
        .store
        .get_bytes(&key)
        .await?
        .ok_or_else(|| Error::IncidentNotFound {
            backup_id: backup_id.to_string(),
        })?;
    let report = parse(catalog, &key, &body)?;
    let md = markdown(&report);
    Ok((report, md))
}

fn parse(catalog: &Catalog, key: &str, body: &[u8]) -> Result<IncidentReport, Error> {
    let report: IncidentReport =
        serde_json::from_slice(body).map_err(|e| Error::ManifestMalformed {
            bucket: catalog.store.bucket().to_string(),
            key: key.to_string(),
            reason: e.to_string(),
        })?;
    if report.format_version != INCIDENT_FORMAT {
        return Err(Error::ManifestMalformed {
            bucket: catalog.store.bucket().to_string(),
            key: key.to_string(),
            reason: format!("unsupported format_version {}", report.format_version),
        });
    }
    Ok(report)
}
