//! What the commands print for people (tables, summaries) and for machines (`--json`), and
//! how a failure ends the process.

use std::process::ExitCode;

use backstop_core::db::restore::RestoreReport;
use backstop_core::db::verify::VerifyReport;
use backstop_core::instance::restore::RestoreStep;
use backstop_core::model::incident::IncidentReport;
use backstop_core::model::job::InstanceJob;
use backstop_core::model::manifest::{InstanceBackup, Manifest, Purpose};
use backstop_core::model::poll::JobStatus;
use backstop_core::model::run::InstanceRestoreMode;
use backstop_core::retention::Plan;
use backstop_core::tasks::drill::DrillReport;
use backstop_core::Error;
use serde::Serialize;

use crate::cli::ec2::InstanceStatus;

/// `println!` for people: the line with every control character (a terminal escape in a
/// database or instance name, say) shown as `\u{..}`, so that no name can redraw the
/// terminal.
macro_rules! say {
    () => { println!() };
    ($($arg:tt)*) => { println!("{}", printable(&format!($($arg)*))) };
}

/// `eprintln!` for people, as [`say!`].
macro_rules! say_err {
    ($($arg:tt)*) => { eprintln!("{}", printable(&format!($($arg)*))) };
}

pub use backstop_core::model::printable;

/// Pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"), // JSON escapes control characters
        Err(e) => say_err!("error: cannot serialise the output: {e}"),
    }
}

/// Reports a failure (on stdout as JSON with `--json`, else on stderr) and the exit code.
pub fn failure(json: bool, e: &Error) -> ExitCode {
    if json {
        let body = serde_json::json!({"error": {"type": e.error_type(), "message": e.to_string()}});
        println!("{body}"); // JSON escapes control characters
    } else {
        say_err!("error: {}: {e}", e.error_type());
    }
    ExitCode::FAILURE
}

/// `db verify`: one line per database.
pub fn verified(report: &VerifyReport) {
    for d in &report.databases {
        let test = match d.restore_test_tables {
            Some(n) => format!(", restore test: {n} tables match the manifest"),
            None => String::new(),
        };
        say!(
            "{} {}: {} bytes, SHA-256 matches, {} archive entries{test}",
            report.backup_id,
            d.database,
            d.bytes,
            d.archive_entries
        );
    }
}

/// `db restore`: what was restored and where the previous state is.
pub fn restored(report: &RestoreReport) {
    say!(
        "restored backup {} into {} ({} tables, row counts match the manifest) in {:.1} s",
        report.backup_id,
        report.database,
        report.tables.len(),
        report.seconds
    );
    if let Some(kept) = &report.failed_state_database {
        say!("the previous state is kept as database {kept}");
    }
    if let Some(id) = &report.forensic_backup_id {
        say!("the previous state was dumped first as backup {id}");
    }
    if !report.tables_not_in_backup.is_empty() {
        say!(
            "left in place (not in the backup): {}",
            report.tables_not_in_backup.join(", ")
        );
    }
    for line in &report.properties_not_restored {
        say!("not put back: {line}");
    }
}

/// `ec2 backup`: the instances whose backup started, with their volume counts.
pub fn instances_started(instances: &[InstanceBackup], jobs: &[InstanceJob]) -> String {
    instances
        .iter()
        .filter(|i| jobs.iter().any(|j| j.instance_id == i.instance_id))
        .map(|e| format!("{} ({} volumes)", e.instance_id, e.volumes.len()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `ec2 status`: one line per instance.
pub fn instance_statuses(statuses: &[InstanceStatus]) {
    for s in statuses {
        match &s.status {
            JobStatus::Pending {
                progress,
                next_wait_seconds,
                detail,
            } => say!(
                "{} PENDING {progress}% ({detail}); poll again in {next_wait_seconds} s",
                s.instance_id
            ),
            JobStatus::Failed { reason } => say!("{} FAILED: {reason}", s.instance_id),
            JobStatus::TimedOut { waited_seconds } => {
                say!("{} TIMED_OUT after {waited_seconds} s", s.instance_id)
            }
            JobStatus::Completed => say!("{} COMPLETED", s.instance_id),
        }
    }
}

/// `ec2 restore`: one instance put back.
pub fn instance_restored(step: &RestoreStep, backup_id: &str, mode: InstanceRestoreMode) {
    say!(
        "restored {} from backup {backup_id} ({mode})",
        step.instance_id
    );
    for v in &step.volumes {
        say!(
            "  {} now {} from {}; the replaced volume {} is kept",
            v.device,
            v.volume_id,
            v.snapshot_id,
            v.replaced_volume_id.as_deref().unwrap_or("-")
        );
    }
    if let Some(task) = &step.replace_root_task_id {
        say!("  root volume replaced by task {task}; the old root is kept");
    }
}

/// `incidents list`: one line per report.
pub fn incidents(reports: &[IncidentReport]) {
    say!(
        "{:<20} {:<32} {:<14} {:<12} ORIGINAL ERROR",
        "WRITTEN",
        "BACKUP",
        "OUTCOME",
        "DEPLOYED"
    );
    for r in reports {
        say!(
            "{:<20} {:<32} {:<14} {:<12} {}",
            rfc3339(r.written_at).chars().take(19).collect::<String>(),
            r.backup_id,
            r.outcome.to_string(),
            r.versions.deploy_commit.as_deref().unwrap_or("-"),
            r.original_error
        );
    }
}

/// `prune`: the plan, one line per backup, volume and database, then the totals.
pub fn prune_plan(plan: &Plan, dry_run: bool) {
    for d in &plan.backups {
        say!(
            "{:<6} {:<16} {:<32} {}",
            d.action,
            d.application,
            d.backup_id,
            d.reason
        );
    }
    for v in &plan.volumes {
        say!(
            "{:<6} {:<16} {:<32} a replaced volume older than the policy",
            "prune",
            "-",
            v
        );
    }
    for d in &plan.databases {
        say!(
            "{:<6} {:<16} {:<32} a {} database on {} older than the policy",
            "prune",
            "-",
            d.database,
            d.kind,
            d.server
        );
    }
    for s in &plan.servers_skipped {
        say!("{:<6} {:<16} {:<32} not searched: {s}", "skip", "-", "-");
    }
    say!(
        "{} backup(s), {} volume(s) and {} database(s) {}",
        plan.to_prune().count(),
        plan.volumes.len(),
        plan.databases.len(),
        if dry_run {
            "would be pruned (dry run: nothing deleted)"
        } else {
            "pruned"
        }
    );
}

/// `drill`: each application's summary and where its report is.
pub fn drills(reports: &[DrillReport]) {
    for r in reports {
        say!("{:<16} {}", r.application, r.summary());
        if !r.report_key.is_empty() {
            say!("{:<16} report: {}", "", r.report_key);
        }
    }
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// The backups, one line each.
pub fn backups(manifests: &[Manifest]) {
    say!(
        "{:<28} {:<22} {:<16} {:<14} {:>12} {:<24} {:<10}",
        "ID",
        "STARTED",
        "APPLICATION",
        "VERSION",
        "SIZE",
        "CONTENTS",
        "STATE"
    );
    for m in manifests {
        let kind = match &m.purpose {
            Purpose::Backup => String::new(),
            Purpose::Forensic { .. } => " (forensic)".to_string(),
        };
        let contents = [(m.databases.len(), "db"), (m.instances.len(), "instance")]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}{}", if *n == 1 { "" } else { "s" }))
            .collect::<Vec<_>>()
            .join(", ");
        say!(
            "{:<28} {:<22} {:<16} {:<14} {:>12} {:<24} {}{kind}",
            m.backup_id,
            rfc3339(m.started_at),
            m.application,
            m.app_version.as_deref().unwrap_or("-"),
            human_bytes(m.total_bytes()),
            contents,
            m.state
        );
    }
}

/// One manifest, field by field.
pub fn manifest(m: &Manifest) {
    say!("backup       {}", m.backup_id);
    say!("application  {}", m.application);
    say!("version      {}", m.app_version.as_deref().unwrap_or("-"));
    say!("state        {}", m.state);
    say!("started      {}", rfc3339(m.started_at));
    say!("finished     {}", rfc3339(m.finished_at));
    if let Purpose::Forensic { restore_of } = &m.purpose {
        say!("forensic     state before restoring {restore_of}");
    }
    if let Some(e) = &m.error {
        say!("error        {e}");
    }
    for d in &m.databases {
        say!(
            "database     {} on {} (PostgreSQL {}, pg_dump {}, {})",
            d.database,
            d.server,
            d.server_version,
            d.pg_dump_version,
            d.compression
        );
        say!(
            "  artifact   s3://…/{} {} in {} parts",
            d.artifact.key,
            human_bytes(d.artifact.bytes),
            d.artifact.parts
        );
        say!("  sha256     {}", d.artifact.sha256);
        for t in &d.tables {
            say!("  table      {}.{}: {} rows", t.schema, t.table, t.rows);
        }
    }
    for i in &m.instances {
        say!(
            "instance     {} in {} ({}{}), {}",
            i.instance_id,
            i.availability_zone,
            i.mode,
            i.image_id
                .as_ref()
                .map(|id| format!(" {id}"))
                .unwrap_or_default(),
            i.state
        );
        if let Some(e) = &i.error {
            say!("  error      {e}");
        }
        for v in &i.volumes {
            say!(
                "  volume     {}{} {} {} GiB {}{}{}{} → {}",
                v.device,
                if v.boot { " (boot)" } else { "" },
                v.volume_id,
                v.size_gib,
                v.volume_type,
                v.iops.map(|n| format!(" {n} iops")).unwrap_or_default(),
                v.throughput
                    .map(|n| format!(" {n} MiB/s"))
                    .unwrap_or_default(),
                if v.encrypted {
                    format!(
                        " encrypted ({})",
                        v.kms_key_id.as_deref().unwrap_or("default key")
                    )
                } else {
                    String::new()
                },
                v.snapshot_id.as_deref().unwrap_or("(snapshot pending)")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_sent_to_the_terminal() {
        assert_eq!(printable("shop\u{1b}[2Jx\ty"), "shop\\u{1b}[2Jx\\u{9}y");
        assert_eq!(printable("caf\u{e9}"), "caf\u{e9}");
    }
}
