//! Telling people: events on EventBridge, source `backstop`, one per outcome
//! (`BackupCompleted`, `BackupFailed`, `DeployProtected`, `DeployFailedRestored`,
//! `RestoreFailed`, `DrillPassed`, `DrillFailed`, `GuardFoundNoBackup`, `DeployInterrupted`),
//! with the application
//! and backup id (when there is one) and a short summary as detail. Rules
//! route them on (the template's optional SNS topic is one). A notification that cannot be
//! sent is logged and never changes the outcome it reports.

use serde::Serialize;

/// The event source Backstop publishes under.
pub const SOURCE: &str = "backstop";

/// What Backstop reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    BackupCompleted,
    BackupFailed,
    DeployProtected,
    DeployFailedRestored,
    RestoreFailed,
    /// A restore drill restored the latest good backup into scratch and it matched.
    DrillPassed,
    /// A restore drill found a backup that does not restore as its manifest says.
    DrillFailed,
    /// Guard mode: a guarded stage failed in a pipeline execution that has no backup.
    GuardFoundNoBackup,
    /// A protect execution ended (failed, timed out, aborted) after its deploy began without
    /// reaching its restore; guard started the restore.
    DeployInterrupted,
}

impl Outcome {
    /// The event's `detail-type`.
    pub fn detail_type(self) -> &'static str {
        match self {
            Outcome::BackupCompleted => "BackupCompleted",
            Outcome::BackupFailed => "BackupFailed",
            Outcome::DeployProtected => "DeployProtected",
            Outcome::DeployFailedRestored => "DeployFailedRestored",
            Outcome::RestoreFailed => "RestoreFailed",
            Outcome::DrillPassed => "DrillPassed",
            Outcome::DrillFailed => "DrillFailed",
            Outcome::GuardFoundNoBackup => "GuardFoundNoBackup",
            Outcome::DeployInterrupted => "DeployInterrupted",
        }
    }
}

/// An EventBridge client and the bus to publish on.
#[derive(Clone, Debug)]
pub struct Notifier {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl Notifier {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        Notifier {
            client,
            bus: bus.into(),
        }
    }

    /// Publishes one event. Returns whether it was accepted; a failure is logged.
    pub async fn publish(&self, outcome: Outcome, detail: &EventDetail) -> bool {
        let detail = match serde_json::to_string(detail) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(event = outcome.detail_type(), error = %e, "event not built");
                return false;
            }
        };
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .source(SOURCE)
            .detail_type(outcome.detail_type())
            .detail(detail)
            .event_bus_name(&self.bus)
            .build();
        if let Err(e) = crate::aws::permissions::check("events:PutEvents") {
            tracing::error!(event = outcome.detail_type(), error = %e, "event not sent");
            return false;
        }
        match self.client.put_events().entries(entry).send().await {
            Ok(out) if out.failed_entry_count() == 0 => true,
            Ok(out) => {
                let why: Vec<String> = out
                    .entries()
                    .iter()
                    .filter_map(|e| e.error_message().map(str::to_string))
                    .collect();
                tracing::warn!(event = outcome.detail_type(), reasons = ?why, "event not accepted");
                false
            }
            Err(e) => {
                let failure = crate::aws::Failure::of(e);
                tracing::warn!(event = outcome.detail_type(), code = %failure.code,
                    reason = %failure.message, "event not sent");
                false
            }
        }
    }
}

/// An event's detail: the summary, the application and backup (when there is one), and what
/// else the outcome names. Empty fields are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventDetail {
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The commit the run deploys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_arn: Option<String>,
    /// `s3://` address of the incident report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident_report: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_execution_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill_id: Option<String>,
    /// `s3://` address of the drill report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
}

impl EventDetail {
    /// A detail with the summary, the application and the backup (each left out when empty).
    pub fn new(summary: impl Into<String>, application: &str, backup_id: &str) -> Self {
        let given = |s: &str| (!s.is_empty()).then(|| s.to_string());
        EventDetail {
            summary: summary.into(),
            application: given(application),
            backup_id: given(backup_id),
            ..EventDetail::default()
        }
    }
}
