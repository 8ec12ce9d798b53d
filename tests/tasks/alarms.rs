//! CloudWatch alarm checks, simulated (each test is named `mocked_…`): the Rust SDK speaks
//! CloudWatch's RPC v2 CBOR protocol, which moto 5.2.5 (the newest) does not serve. The checks
//! run through the same `Checker` the Lambdas run, on a CloudWatch client simulated with
//! aws-smithy-mocks: alarms in OK or INSUFFICIENT_DATA pass on every round, one in ALARM fails
//! the round and names itself and its reason, an alarm that does not exist fails, prefixes
//! follow every page, and throttling is retried by the SDK and then named. Prepare (verify,
//! mode `run`) refuses an alarm that does not exist before any backup, on a context whose
//! CloudWatch is the recording fake answering with no alarm.

use std::time::Duration;

use aws_sdk_cloudwatch::config::retry::RetryConfig;
use aws_sdk_cloudwatch::error::ErrorMetadata;
use aws_sdk_cloudwatch::operation::describe_alarms::{DescribeAlarmsError, DescribeAlarmsOutput};
use aws_sdk_cloudwatch::types::{CompositeAlarm, MetricAlarm, StateValue};
use aws_sdk_cloudwatch::Client;
use aws_smithy_mocks::{create_mock_http_client, mock, mock_client, Rule, RuleMode};
use serde_json::json;

use backstop_core::aws::cloudwatch::Alarms;
use backstop_core::checks::Checker;
use backstop_core::db::target::{Access, TlsPolicy};
use backstop_core::model::run::RunDocument;
use backstop_core::tasks::verify::run::RunTask;
use backstop_core::tasks::verify::{self, VerifyTask};
use backstop_core::{Config, Context, Error};

use crate::support::offline::CBOR_EMPTY_MAP;
use crate::support::{closed_port_shared, limits_checked, FakeAws};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Requests per call: the SDK's standard retry, as configured for these clients.
const ATTEMPTS: u32 = 4;

/// The checks of the Lambdas, their CloudWatch answering from `rules` (the SDK's standard
/// retry at [`ATTEMPTS`] requests per call and millisecond backoff, so every request can be
/// counted). Secrets Manager is a closed port: nothing else is called.
struct Checks {
    alarms: Alarms,
    secrets: aws_sdk_secretsmanager::Client,
}

impl Checks {
    fn new(rules: &[&Rule]) -> Checks {
        let client = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, rules, |c| c
            .http_client(limits_checked(create_mock_http_client()))
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(1))
                    .with_max_backoff(Duration::from_millis(4))
            ));
        Checks {
            alarms: Alarms::new(client),
            secrets: aws_sdk_secretsmanager::Client::new(&closed_port_shared()),
        }
    }

    fn run(&self, doc: &RunDocument) -> Result<String, Error> {
        let checker = Checker {
            alarms: &self.alarms,
            secrets: &self.secrets,
            access: &Access::Unrestricted,
            tls: &TlsPolicy::default(),
        };
        rt().block_on(checker.run(doc))
    }
}

fn run(alarms: serde_json::Value, consecutive: u32) -> RunDocument {
    RunDocument::from_json(
        &json!({
            "application": "shop",
            "targets": [{"type": "database", "url_env": "SHOP_DB_URL"}],
            "checks": {"alarms": alarms, "consecutive": consecutive, "interval_seconds": 0}
        })
        .to_string(),
    )
    .unwrap()
}

fn metric(name: &str, state: StateValue, reason: &str) -> MetricAlarm {
    MetricAlarm::builder()
        .alarm_name(name)
        .state_value(state)
        .state_reason(reason)
        .build()
}

fn page(metric: Vec<MetricAlarm>, next: Option<&str>) -> DescribeAlarmsOutput {
    DescribeAlarmsOutput::builder()
        .set_metric_alarms(Some(metric))
        .set_next_token(next.map(str::to_string))
        .build()
}

fn meta(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(code)
        .message(format!("simulated {code}"))
        .build()
}

#[test]
fn mocked_alarms_in_ok_or_insufficient_data_pass_every_round_across_pages() {
    let first = mock!(Client::describe_alarms)
        .match_requests(|r| r.alarm_name_prefix() == Some("shop-") && r.next_token().is_none())
        .then_output(|| {
            page(
                vec![metric("shop-5xx", StateValue::Ok, "fine")],
                Some("page-2"),
            )
        });
    let second = mock!(Client::describe_alarms)
        .match_requests(|r| {
            r.next_token() == Some("page-2")
                && r.alarm_types().len() == 2
                && r.alarm_name_prefix() == Some("shop-")
        })
        .then_output(|| {
            DescribeAlarmsOutput::builder()
                .composite_alarms(
                    CompositeAlarm::builder()
                        .alarm_name("shop-health")
                        .state_value(StateValue::InsufficientData)
                        .build(),
                )
                .build()
        });
    let checks = Checks::new(&[&first, &second]);
    let doc = run(json!([{"name_prefix": "shop-"}]), 3);
    let summary = checks.run(&doc).unwrap();
    assert!(
        summary.contains("0 HTTP, 0 SQL and 1 alarm check(s) passed 3 time(s) in a row"),
        "{summary}"
    );
    assert_eq!(first.num_calls(), 3, "one first page per round");
    assert_eq!(second.num_calls(), 3, "the second page is read every round");
}

#[test]
fn mocked_alarm_going_into_alarm_fails_the_round_naming_it_and_its_reason() {
    let describe = mock!(Client::describe_alarms)
        .match_requests(|r| r.alarm_names() == ["shop-5xx"])
        .sequence()
        .output(|| page(vec![metric("shop-5xx", StateValue::Ok, "fine")], None))
        .output(|| {
            page(
                vec![metric(
                    "shop-5xx",
                    StateValue::Alarm,
                    "Threshold Crossed: 12 5XX in 1 minute",
                )],
                None,
            )
        })
        .build();
    let checks = Checks::new(&[&describe]);
    let doc = run(json!([{"name": "shop-5xx"}]), 3);
    let err = checks.run(&doc).unwrap_err();
    assert_eq!(err.error_type(), "VerificationFailed", "{err}");
    assert_eq!(
        err.to_string(),
        "check failed: an alarm is in ALARM: shop-5xx (Threshold Crossed: 12 5XX in 1 \
         minute)"
    );
    assert_eq!(describe.num_calls(), 2, "the second round failed; no third");
}

#[test]
fn mocked_missing_alarm_fails_the_checks_and_is_refused_before_any_backup() {
    let none = mock!(Client::describe_alarms).then_output(|| page(vec![], None));
    let checks = Checks::new(&[&none]);
    let doc = run(json!([{"name": "shop-5xx"}]), 1);
    let err = checks.run(&doc).unwrap_err();
    assert_eq!(err.error_type(), "VerificationFailed", "{err}");
    assert!(
        err.to_string().contains("alarm shop-5xx does not exist"),
        "{err}"
    );
    // Prepare (verify, mode run) looks the alarms up once and refuses the document. Its
    // context's CloudWatch is the recording fake, answering that there is no such alarm.
    let aws = FakeAws::new().answer("monitoring:DescribeAlarms", CBOR_EMPTY_MAP);
    let ctx = Context::new(aws.shared(), Config::new("backups", "backstop")).unwrap();
    let task = VerifyTask::Run(RunTask { document: doc });
    let err = rt().block_on(verify::handle(&ctx, task)).unwrap_err();
    assert_eq!(err.error_type(), "InvalidInput", "{err}");
    assert!(
        err.to_string()
            .contains("checks.alarms[0]: alarm shop-5xx does not exist"),
        "{err}"
    );
    assert_eq!(
        aws.calls(),
        ["monitoring:DescribeAlarms"],
        "one look, nothing else"
    );
}

#[test]
fn mocked_throttled_describe_alarms_is_retried_then_named_throttled() {
    let flaky = mock!(Client::describe_alarms)
        .sequence()
        .error(|| DescribeAlarmsError::generic(meta("Throttling")))
        .times(2)
        .output(|| page(vec![metric("shop-5xx", StateValue::Ok, "fine")], None))
        .build();
    let doc = run(json!([{"name": "shop-5xx"}]), 1);
    Checks::new(&[&flaky]).run(&doc).unwrap();
    assert_eq!(
        flaky.num_calls(),
        3,
        "two throttled requests, then the answer"
    );

    let throttled = mock!(Client::describe_alarms)
        .then_error(|| DescribeAlarmsError::generic(meta("Throttling")));
    let err = Checks::new(&[&throttled]).run(&doc).unwrap_err();
    assert_eq!(err.error_type(), "Throttled", "{err}");
    assert_eq!(
        err.to_string(),
        format!("CloudWatch DescribeAlarms was still throttled after {ATTEMPTS} attempts")
    );
    assert_eq!(throttled.num_calls(), ATTEMPTS as usize);

    let denied = mock!(Client::describe_alarms)
        .then_error(|| DescribeAlarmsError::generic(meta("AccessDenied")));
    let err = Checks::new(&[&denied]).run(&doc).unwrap_err();
    assert_eq!(err.error_type(), "CloudWatchError", "{err}");
    assert_eq!(denied.num_calls(), 1, "only throttling is retried");
}

#[test]
fn an_alarm_check_needs_exactly_one_of_name_and_name_prefix() {
    for alarms in [
        json!([{}]),
        json!([{"name": "a", "name_prefix": "b"}]),
        json!([{"name": " "}]),
        json!([{"alarm": "a"}]),
    ] {
        let err = RunDocument::from_json(
            &json!({
                "application": "shop",
                "targets": [{"type": "database", "url_env": "SHOP_DB_URL"}],
                "checks": {"alarms": alarms}
            })
            .to_string(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{alarms}: {err}");
    }
}
