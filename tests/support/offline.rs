//! AWS and task contexts with no server at all, for the fast tests:
//!
//! - a closed port (127.0.0.1:1) with retries off, so any AWS call fails at once and touches
//!   nothing;
//! - [`FakeAws`], an HTTP client in place of AWS that records every call and answers the
//!   operations a test gives it (anything else fails at once), and, like the proxy in front of
//!   every moto, fails the test on a request that breaks AWS's documented limits
//!   (`backstop_testbed::limits`), so a test can say exactly which
//!   calls a task made and what it published. A test in which it answers an operation is a
//!   mock, named `mocked_…`; each of those scenarios also runs against moto in the `flow` and
//!   `ec2` binaries. One that only records proves that no call was made at all;
//! - the in-memory catalog ([`MemoryStore`], which keeps S3's rules) swapped into a context;
//! - the sample events in `events/`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};
use aws_smithy_types::body::SdkBody;
use backstop_core::catalog::Catalog;
use backstop_core::context::GuardConfig;
use backstop_core::store::MemoryStore;
use backstop_core::{Config, Context};
use serde_json::Value;

use super::{ACCESS_KEY, PREFIX, REGION, SECRET_KEY};

/// The shared AWS configuration at `endpoint`, with the bed's region and credentials.
pub fn shared_at(endpoint: &str, retry: RetryConfig) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "backstop-tests",
        )))
        .retry_config(retry)
        .build()
}

/// Every AWS call goes to a closed port, retries off: it fails at once and touches nothing.
pub fn closed_port_shared() -> SdkConfig {
    shared_at("http://127.0.0.1:1", RetryConfig::disabled())
}

/// The Lambdas' task context on the closed port (bucket `backups`), with guard mode watching
/// `shop-pipeline:Deploy` and a state machine configured.
pub fn closed_port_context() -> Context {
    Context::new(
        closed_port_shared(),
        guarded(Config::new("backups", PREFIX)),
    )
    .unwrap()
}

/// `config` with guard mode watching `shop-pipeline:Deploy`, and a state machine when it has
/// none.
pub fn guarded(mut config: Config) -> Config {
    config.guard = GuardConfig::parse("shop-pipeline:Deploy").unwrap();
    config.state_machine_arn.get_or_insert_with(|| {
        format!(
            "arn:aws:states:{REGION}:{}:stateMachine:protect",
            super::ACCOUNT
        )
    });
    config
}

/// A catalog (prefix `backstop`) in a fresh in-memory bucket `bucket`, and the bucket.
pub fn memory_catalog(bucket: &str) -> (Catalog, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new(bucket));
    let catalog = Catalog::new(store.clone(), PREFIX).unwrap();
    (catalog, store)
}

/// A task context with `config` whose catalog is in memory and whose AWS is `shared`.
pub fn memory_context(shared: SdkConfig, config: Config) -> (Context, Arc<MemoryStore>) {
    let (catalog, store) = memory_catalog(&config.bucket);
    let ctx = Context::new(shared, config).unwrap().with_catalog(catalog);
    (ctx, store)
}

/// A sample event from `events/`.
pub fn sample_event(name: &str) -> Value {
    let path = format!("{}/events/{name}.json", super::root());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One call the fake saw: `service:Operation` and the request body.
#[derive(Clone, Debug)]
pub struct Call {
    pub operation: String,
    pub body: Vec<u8>,
}

/// An HTTP client standing in for AWS: records every request as `service:Operation`
/// (`ec2:DescribeVolumes`, `events:PutEvents`, `monitoring:DescribeAlarms`,
/// `states:ListExecutions`, …) and answers the operations given with their body; any other
/// request is an HTTP 500, which fails at once (retries are off).
#[derive(Clone, Default)]
pub struct FakeAws {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    answers: BTreeMap<String, Vec<u8>>,
    calls: Vec<Call>,
}

/// What EventBridge answers a `PutEvents` that it accepted.
pub const PUT_EVENTS_OK: &str = r#"{"FailedEntryCount":0,"Entries":[{"EventId":"e-1"}]}"#;

/// An empty answer of EC2's query protocol to `action` (`DescribeVolumes` → `volumeSet`, …).
pub fn ec2_empty(action: &str, set: &str) -> String {
    format!(
        "<{action}Response xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
         <requestId>r-1</requestId><{set}/></{action}Response>"
    )
}

/// An empty CBOR map: CloudWatch's (RPC v2 CBOR) answer with nothing in it.
pub const CBOR_EMPTY_MAP: &[u8] = &[0xa0];

impl FakeAws {
    pub fn new() -> FakeAws {
        FakeAws::default()
    }

    /// Answers `operation` (`service:Operation`) with `body`, every time.
    pub fn answer(self, operation: &str, body: impl Into<Vec<u8>>) -> FakeAws {
        self.state
            .lock()
            .unwrap()
            .answers
            .insert(operation.to_string(), body.into());
        self
    }

    /// Accepts every event published on EventBridge.
    pub fn accepting_events(self) -> FakeAws {
        self.answer("events:PutEvents", PUT_EVENTS_OK)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|c| c.operation.clone())
            .collect()
    }

    /// The request bodies of every call of `operation` so far, in order.
    pub fn bodies(&self, operation: &str) -> Vec<Vec<u8>> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.operation == operation)
            .map(|c| c.body.clone())
            .collect()
    }

    /// The events published so far: (detail-type, detail).
    pub fn published(&self) -> Vec<(String, Value)> {
        let state = self.state.lock().unwrap();
        let mut out = Vec::new();
        for call in state
            .calls
            .iter()
            .filter(|c| c.operation == "events:PutEvents")
        {
            let req: Value = serde_json::from_slice(&call.body).unwrap();
            for e in req["Entries"].as_array().unwrap() {
                assert_eq!(e["Source"], "backstop", "{e}");
                out.push((
                    e["DetailType"].as_str().unwrap().to_string(),
                    serde_json::from_str(e["Detail"].as_str().unwrap()).unwrap(),
                ));
            }
        }
        out
    }

    /// The shared AWS configuration whose clients all go to this fake, retries off.
    pub fn shared(&self) -> SdkConfig {
        let state = self.state.clone();
        let client =
            aws_smithy_http_client::test_util::infallible_client_fn(move |req| answer(&state, req));
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                ACCESS_KEY,
                SECRET_KEY,
                None,
                None,
                "backstop-tests",
            )))
            .retry_config(RetryConfig::disabled())
            .http_client(super::limits_checked(client))
            .build()
    }
}

/// Records the request and builds the answer in the request's protocol.
fn answer(state: &Mutex<FakeState>, req: http::Request<SdkBody>) -> http::Response<SdkBody> {
    let host = req
        .uri()
        .host()
        .or_else(|| req.headers().get("host").and_then(|h| h.to_str().ok()))
        .unwrap_or_default()
        .to_string();
    let service = host.split('.').next().unwrap_or_default().to_string();
    let body = req.body().bytes().unwrap_or_default().to_vec();
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
        .map(str::to_string);
    let path = req.uri().path().to_string();
    let (operation, content_type, cbor) = if let Some(t) = &target {
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|c| c.to_str().ok())
            .unwrap_or("application/x-amz-json-1.1")
            .to_string();
        (
            t.rsplit('.').next().unwrap_or_default().to_string(),
            content_type,
            false,
        )
    } else if let Some((_, op)) = path.rsplit_once("/operation/") {
        (op.to_string(), "application/cbor".to_string(), true)
    } else {
        let text = String::from_utf8_lossy(&body).to_string();
        let action = text
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .unwrap_or("?")
            .to_string();
        (action, "text/xml;charset=UTF-8".to_string(), false)
    };
    let operation = format!("{service}:{operation}");
    let mut s = state.lock().unwrap();
    s.calls.push(Call {
        operation: operation.clone(),
        body,
    });
    let mut response = http::Response::builder().header("content-type", &content_type);
    if cbor {
        response = response.header("smithy-protocol", "rpc-v2-cbor");
    }
    match s.answers.get(&operation) {
        Some(body) => response
            .status(200)
            .body(SdkBody::from(body.clone()))
            .unwrap(),
        None => response
            .status(500)
            .body(SdkBody::from(format!(
                "no answer for {operation} in this test"
            )))
            .unwrap(),
    }
}
