//! The CloudWatch adapter: the alarms a deployment check selects (one by name, or every
//! metric and composite alarm whose name starts with a prefix) and the state each is in. A
//! call still throttled after the SDK's retries is `Throttled`; any other failure is
//! `CloudWatchError`.

use aws_sdk_cloudwatch::types::{AlarmType, StateValue};

use crate::aws::{named_error, ServiceError};
use crate::error::Error;
use crate::model::run::AlarmCheck;

/// One alarm as a check sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmState {
    pub name: String,
    pub state: StateValue,
    pub reason: String,
}

/// A CloudWatch client whose failures are named errors.
#[derive(Clone, Debug)]
pub struct Alarms {
    client: aws_sdk_cloudwatch::Client,
}

impl Alarms {
    pub fn new(client: aws_sdk_cloudwatch::Client) -> Self {
        Alarms { client }
    }

    /// Every alarm `check` selects, with its state, following every page. None is an empty
    /// list: the caller decides what that means.
    pub async fn select(&self, check: &AlarmCheck) -> Result<Vec<AlarmState>, Error> {
        crate::aws::permissions::check("cloudwatch:DescribeAlarms")?;
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .describe_alarms()
                .set_alarm_names(check.name.clone().map(|n| vec![n]))
                .set_alarm_name_prefix(check.name_prefix.clone())
                .alarm_types(AlarmType::MetricAlarm)
                .alarm_types(AlarmType::CompositeAlarm)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| {
                    let retry = self.client.config().retry_config();
                    named_error(e, "CloudWatch", "DescribeAlarms", retry, CLOUDWATCH)
                })?;
            let state =
                |name: Option<&str>, value: Option<&StateValue>, reason: Option<&str>| AlarmState {
                    name: name.unwrap_or_default().to_string(),
                    state: value.cloned().unwrap_or(StateValue::InsufficientData),
                    reason: reason.unwrap_or_default().to_string(),
                };
            for a in page.metric_alarms() {
                found.push(state(a.alarm_name(), a.state_value(), a.state_reason()));
            }
            for a in page.composite_alarms() {
                found.push(state(a.alarm_name(), a.state_value(), a.state_reason()));
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(found)
    }
}

/// CloudWatch's own error.
const CLOUDWATCH: ServiceError = |operation, code, reason, source| Error::CloudWatch {
    operation,
    code,
    reason,
    source,
};
