//! Incident reports: for every deploy that failed (restored, or not), what happened, as
//! written beside the backup's manifest (`incident.json`) and rendered as Markdown
//! (`incident.md`): the timeline of the execution's states, the original error, what the
//! checks saw, what was restored and how long it took, where the failed state is kept, and the
//! versions involved. Pure data and its rendering: no I/O.

use crate::model::printable;
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

/// The report as Markdown. Every text from the run, the events or the servers is written
/// [`printable`] (no control character can start a heading or a table row of its own) and
/// without backticks inside code spans.
pub fn markdown(r: &IncidentReport) -> String {
    let or_none = |v: &Option<String>| printable(v.as_deref().unwrap_or("unknown"));
    let code = |v: &str| printable(&v.replace('`', "'"));
    let list = |items: &[String]| {
        if items.is_empty() {
            "- none\n".to_string()
        } else {
            items
                .iter()
                .map(|i| format!("- {}\n", printable(i)))
                .collect()
        }
    };
    let mut md = format!(
        "# Incident: {} deploy {} ({})\n\n\
         - Backup: `{}`\n- Execution: `{}`\n- Written: {}\n\n\
         ## Versions\n\n- Deployed: {}\n- In the backup (running before): {}\n- Pipeline execution: {}\n\n\
         ## Original error\n\n{}\n\n## Checks\n\n{}\n## Restored",
        printable(&r.application),
        or_none(&r.versions.deploy_commit),
        r.outcome,
        code(&r.backup_id),
        code(&r.execution_arn),
        rfc3339(r.written_at),
        or_none(&r.versions.deploy_commit),
        r.versions.backup_commit.as_deref().map_or_else(
            || "unknown (no earlier deploy of this application passed its checks under Backstop)"
                .to_string(),
            printable
        ),
        or_none(&r.versions.pipeline_execution_id),
        printable(&if r.original_cause.starts_with(&format!("{}:", r.original_error)) {
            r.original_cause.clone()
        } else {
            format!("{}: {}", r.original_error, r.original_cause)
        }),
        list(&r.checks),
    );
    if let Some(s) = r.restore_seconds {
        md.push_str(&format!(" (in {s:.1} s)"));
    }
    md.push_str(&format!("\n\n{}", list(&r.restored)));
    if let Some(f) = &r.restore_failure {
        md.push_str(&format!(
            "\n**Not everything was restored:** {}\n",
            printable(f)
        ));
    }
    md.push_str(&format!(
        "\n## Failed state kept\n\n{}\n## Timeline\n\n| state | entered | left | times |\n|---|---|---|---|\n",
        list(&r.failed_state)
    ));
    for e in &r.timeline {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            printable(&e.state.replace('|', "\\|")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_any_input_cannot_shape_the_markdown() {
        let at = time::macros::datetime!(2026-12-01 10:00 UTC);
        let report = IncidentReport {
            format_version: INCIDENT_FORMAT,
            application: "shop".to_string(),
            backup_id: "b`1".to_string(),
            execution_arn: "arn".to_string(),
            outcome: IncidentOutcome::DeployFailed,
            written_at: at,
            versions: Versions {
                deploy_commit: Some("v2\n# Approved by security".to_string()),
                backup_commit: None,
                pipeline_execution_id: None,
            },
            original_error: "CommandFailed".to_string(),
            original_cause: "migration failed\u{1b}[2J\r\n## Restored\n- everything".to_string(),
            checks: vec!["check\n| forged | row |".to_string()],
            restored: vec!["database shop".to_string()],
            restore_failure: None,
            restore_seconds: Some(1.0),
            failed_state: vec!["database shop_failed_x\n## Timeline".to_string()],
            timeline: vec![TimelineEntry {
                state: "Prepare|x".to_string(),
                entered_at: at,
                exited_at: None,
                times: 1,
            }],
        };
        let md = markdown(&report);
        assert!(!md.contains('\u{1b}') && !md.contains('\r'), "{md}");
        let headings: Vec<&str> = md.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(
            headings,
            [
                "# Incident: shop deploy v2\\u{a}# Approved by security (DeployFailed)",
                "## Versions",
                "## Original error",
                "## Checks",
                "## Restored (in 1.0 s)",
                "## Failed state kept",
                "## Timeline"
            ],
            "{md}"
        );
        assert!(md.contains("- Backup: `b'1`"), "{md}");
        assert!(md.contains("| Prepare\\|x |"), "{md}");
        assert_eq!(md.lines().filter(|l| l.starts_with('|')).count(), 3, "{md}");
    }
}
