//! The CloudWatch alarms port: the alarms a deployment check selects (one by name, or every
//! metric and composite alarm whose name starts with a prefix) and the state each is in. A
//! throttled call is retried like EC2's, then `Throttled`; any other failure is
//! `CloudWatchError`.

use aws_sdk_cloudwatch::types::AlarmType;

use crate::ec2::{retry_throttled, Retry};
use crate::error::Error;
use crate::run::AlarmCheck;

/// One alarm as a check sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmState {
    pub name: String,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub state: String,
    pub reason: String,
}

/// A CloudWatch client with Backstop's retry of throttled calls.
#[derive(Clone, Debug)]
pub struct Alarms {
    client: aws_sdk_cloudwatch::Client,
    retry: Retry,
}

impl Alarms {
    pub fn new(client: aws_sdk_cloudwatch::Client, retry: Retry) -> Self {
        Alarms { client, retry }
    }

    /// Every alarm `check` selects, with its state, following every page. None is an empty
    /// list: the caller decides what that means.
    pub async fn select(&self, check: &AlarmCheck) -> Result<Vec<AlarmState>, Error> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = retry_throttled(
                &self.retry,
                "CloudWatch DescribeAlarms",
                || {
                    self.client
                        .describe_alarms()
                        .set_alarm_names(check.name.clone().map(|n| vec![n]))
                        .set_alarm_name_prefix(check.name_prefix.clone())
                        .alarm_types(AlarmType::MetricAlarm)
                        .alarm_types(AlarmType::CompositeAlarm)
                        .set_next_token(token.clone())
                        .send()
                },
                |e| cloudwatch_error("DescribeAlarms", e),
            )
            .await?;
            let state =
                |name: Option<&str>, value: Option<&str>, reason: Option<&str>| AlarmState {
                    name: name.unwrap_or_default().to_string(),
                    state: value.unwrap_or("INSUFFICIENT_DATA").to_string(),
                    reason: reason.unwrap_or_default().to_string(),
                };
            for a in page.metric_alarms() {
                found.push(state(
                    a.alarm_name(),
                    a.state_value().map(|v| v.as_str()),
                    a.state_reason(),
                ));
            }
            for a in page.composite_alarms() {
                found.push(state(
                    a.alarm_name(),
                    a.state_value().map(|v| v.as_str()),
                    a.state_reason(),
                ));
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(found)
    }

    /// One round of an alarm check: fails when an alarm it selects is in ALARM, or when it
    /// selects none (a deleted alarm or a mistyped name must not pass as healthy).
    pub async fn check(&self, check: &AlarmCheck) -> Result<usize, Error> {
        let alarms = self.select(check).await?;
        if alarms.is_empty() {
            return Err(Error::VerificationFailed(format!(
                "{} does not exist",
                check.label()
            )));
        }
        let firing: Vec<String> = alarms
            .iter()
            .filter(|a| a.state == "ALARM")
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
        Ok(alarms.len())
    }
}

fn cloudwatch_error<E, R>(
    operation: &'static str,
    err: &aws_sdk_cloudwatch::error::SdkError<E, R>,
) -> Error
where
    E: aws_sdk_cloudwatch::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let (code, reason) = crate::error::aws_code_and_reason(err);
    Error::CloudWatch {
        operation,
        code,
        reason,
    }
}
