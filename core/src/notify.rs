//! Telling people: events on EventBridge, source `backstop`, one per outcome
//! (`BackupCompleted`, `BackupFailed`, `DeployProtected`, `DeployFailedRestored`,
//! `RestoreFailed`, `DrillPassed`, `DrillFailed`, `GuardFoundNoBackup`), with the application
//! and backup id (when there is one) and a short summary as detail. Rules
//! route them on (the template's optional SNS topic is one). A notification that cannot be
//! sent is logged and never changes the outcome it reports.

use serde_json::{json, Value};

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
    pub async fn publish(
        &self,
        outcome: Outcome,
        application: &str,
        backup_id: &str,
        summary: &str,
        extra: Value,
    ) -> bool {
        let mut detail = json!({ "summary": summary });
        for (key, value) in [("application", application), ("backup_id", backup_id)] {
            if !value.is_empty() {
                detail[key] = json!(value);
            }
        }
        if let (Some(d), Value::Object(more)) = (detail.as_object_mut(), extra) {
            d.extend(more);
        }
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .source(SOURCE)
            .detail_type(outcome.detail_type())
            .detail(detail.to_string())
            .event_bus_name(&self.bus)
            .build();
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
                let (code, reason) = crate::error::aws_code_and_reason(&e);
                tracing::warn!(event = outcome.detail_type(), %code, %reason, "event not sent");
                false
            }
        }
    }
}
