//! Incident reports: for every deploy that failed (restored, or not), what happened, as
//! written beside the backup's manifest (`incident.json`) and rendered as Markdown
//! (`incident.md`): the timeline of the execution's states, the original error, what the
//! checks saw, what was restored and how long it took, where the failed state is kept, and the
//! versions involved. Pure data and its rendering: no I/O.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// How a failed deploy ended, as the execution's Fail state names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IncidentOutcome {
    /// Every target was restored and the checks pass again.
    DeployFailed,
    /// Not everything is back.
    RestoreFailed,
}

impl std::fmt::Display for IncidentOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IncidentOutcome::DeployFailed => "DeployFailed",
            IncidentOutcome::RestoreFailed => "RestoreFailed",
        })
    }
}

/// The report format this code writes and reads.
pub const INCIDENT_FORMAT: u32 = 1;

/// One failed deploy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentReport {
    pub format_version: u32,
    pub application: String,
    pub backup_id: String,
    pub execution_arn: String,
    pub outcome: IncidentOutcome,
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
