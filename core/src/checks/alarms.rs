//! Alarm checks: every CloudWatch alarm a check selects must be out of ALARM.

use aws_sdk_cloudwatch::types::StateValue;

use crate::aws::cloudwatch::Alarms;
use crate::error::Error;
use crate::model::run::AlarmCheck;

/// One round of an alarm check: fails when an alarm it selects is in ALARM, or when it
/// selects none (a deleted alarm or a mistyped name must not pass as healthy). Returns how
/// many alarms it saw.
pub async fn check(alarms: &Alarms, check: &AlarmCheck) -> Result<usize, Error> {
    let selected = alarms.select(check).await?;
    if selected.is_empty() {
        return Err(Error::VerificationFailed(format!(
            "{} does not exist",
            check.label()
        )));
    }
    let firing: Vec<String> = selected
        .iter()
        .filter(|a| a.state == StateValue::Alarm)
        .map(|a| format!("{} ({})", a.name, a.reason))
        .collect();
    if !firing.is_empty() {
        return Err(Error::VerificationFailed(format!(
            "{} in ALARM: {}",
            if firing.len() == 1 {
                "an alarm is"
            } else {
                "alarms are"
            },
            firing.join("; ")
        )));
    }
    Ok(selected.len())
}
