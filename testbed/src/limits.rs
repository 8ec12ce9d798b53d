//! AWS's documented request limits, checked on the wire: every request that reaches moto
//! (through the proxy in front of every [`crate::Moto`]) or the tests' recording fake is
//! read as AWS would read it, and a request that AWS would refuse is a [`Violation`]. moto
//! and mocks accept these requests; a real account does not, so a test that sends one fails
//! here instead of passing against the emulator.
//!
//! The checks work on HTTP requests, not on SDK types, so one checker serves every process a
//! test starts (the `backstop` CLI, `backstop-local`'s functions, the test itself) and every
//! protocol the code speaks: EC2's query protocol, the JSON protocol (Step Functions,
//! EventBridge, Secrets Manager, CodePipeline) and S3's REST protocol. CloudWatch's RPC v2
//! CBOR requests are not decoded: the code only reads alarms with them.
//!
//! Each limit cites the page that documents it.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::sync::Mutex;

use serde_json::Value;

/// One request AWS would refuse: which call, and which documented limit it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `service:Operation`, e.g. `ec2:CreateReplaceRootVolumeTask`.
    pub operation: String,
    /// What breaks the limit, with the limit and where it is documented.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AWS would refuse {}: {}", self.operation, self.message)
    }
}

/// An HTTP request as sent on the wire.
#[derive(Debug, Clone, Copy)]
pub struct WireRequest<'a> {
    pub method: &'a str,
    /// Path and query, still percent-encoded.
    pub target: &'a str,
    /// The `Host` header (virtual-hosted S3 names the bucket there).
    pub host: &'a str,
    pub headers: &'a [(String, String)],
    /// The body when it is known (a streamed body may be absent or aws-chunked).
    pub body: &'a [u8],
}

impl WireRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The protocol a request speaks, which decides the shape of an error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// EC2's query protocol (form body with `Action=`).
    Query,
    /// `x-amz-target` JSON (Step Functions, EventBridge, Secrets Manager, CodePipeline).
    Json,
    /// CloudWatch's RPC v2 CBOR.
    Cbor,
    /// S3's REST protocol.
    S3,
    /// moto's own API (`/moto-api/…`): not AWS.
    Emulator,
}

/// The request's protocol and its `service:Operation` name.
pub fn classify(req: &WireRequest) -> (Protocol, String) {
    let path = req.target.split('?').next().unwrap_or_default();
    if path.starts_with("/moto-api") {
        return (Protocol::Emulator, "moto:api".into());
    }
    if let Some(target) = req.header("x-amz-target") {
        let (service, op) = target.split_once('.').unwrap_or(("", target));
        let service = match service {
            "AWSStepFunctions" => "states",
            "AWSEvents" => "events",
            "secretsmanager" => "secretsmanager",
            s if s.starts_with("CodePipeline") => "codepipeline",
            other => other,
        };
        return (Protocol::Json, format!("{service}:{op}"));
    }
    if let Some((_, op)) = path.rsplit_once("/operation/") {
        return (Protocol::Cbor, format!("monitoring:{op}"));
    }
    let form = req
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form {
        if let Some(action) = form_pairs(req.body)
            .into_iter()
            .find_map(|(k, v)| (k == "Action").then_some(v))
        {
            return (Protocol::Query, format!("ec2:{action}"));
        }
    }
    (Protocol::S3, format!("s3:{}", s3_operation(req)))
}

/// The checker. It keeps the sizes of multipart upload parts between requests, so one
/// checker must see every request of an upload (one per emulator).
#[derive(Debug, Default)]
pub struct Limits {
    /// Upload id → part number → size in bytes.
    parts: Mutex<HashMap<String, BTreeMap<u32, u64>>>,
}

impl Limits {
    pub fn new() -> Limits {
        Limits::default()
    }

    /// What AWS would refuse in `req`; empty when it would accept it.
    pub fn check_request(&self, req: &WireRequest) -> Vec<Violation> {
        let (protocol, operation) = classify(req);
        let mut found = Found::new(&operation);
        match protocol {
            Protocol::Query => check_ec2(&mut found, &form_pairs(req.body)),
            Protocol::Json => match serde_json::from_slice::<Value>(req.body) {
                Ok(body) => check_json(&mut found, &body),
                Err(e) => found.broke(format!("the body is not JSON: {e}")),
            },
            Protocol::S3 => self.check_s3(&mut found, req),
            Protocol::Cbor | Protocol::Emulator => {}
        }
        found.violations
    }

    /// What AWS could never have answered with `body` to `req`: a Step Functions execution
    /// whose input, output, error or cause is larger than Step Functions allows (moto's engine
    /// does not end such an execution with `States.DataLimitExceeded`, AWS does).
    pub fn check_response(&self, req: &WireRequest, body: &[u8]) -> Vec<Violation> {
        let (protocol, operation) = classify(req);
        let mut found = Found::new(&operation);
        if protocol == Protocol::Json && operation.starts_with("states:") {
            if let Ok(body) = serde_json::from_slice::<Value>(body) {
                check_execution_payloads(&mut found, &body);
            }
        }
        found.violations
    }

    fn check_s3(&self, found: &mut Found, req: &WireRequest) {
        let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
        let query: BTreeMap<String, String> = form_pairs(query.as_bytes()).into_iter().collect();
        if let Some(key) = s3_key(req.host, path) {
            // https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html
            // "The name for a key is a sequence of Unicode characters whose UTF-8 encoding is
            // at most 1,024 bytes long."
            if key.len() > 1024 {
                found.broke(format!(
                    "the object key is {} bytes of UTF-8; S3 allows 1,024 (object-keys.html)",
                    key.len()
                ));
            }
        }
        // https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingMetadata.html
        // "the user-defined metadata is limited to 2 KB in size … the sum of the number of bytes
        // in the UTF-8 encoding of each key and value".
        let metadata: usize = req
            .headers
            .iter()
            .filter_map(|(n, v)| {
                let n = n.to_ascii_lowercase();
                n.strip_prefix("x-amz-meta-").map(|k| k.len() + v.len())
            })
            .sum();
        if metadata > 2048 {
            found.broke(format!(
                "user-defined metadata is {metadata} bytes; S3 allows 2 KB (UsingMetadata.html)"
            ));
        }
        let size = req
            .header("x-amz-decoded-content-length")
            .or_else(|| req.header("content-length"))
            .and_then(|v| v.parse::<u64>().ok());
        const MIB: u64 = 1024 * 1024;
        const GIB: u64 = 1024 * MIB;
        // https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html
        // Part numbers 1 to 10,000; part size 5 MiB to 5 GiB (no minimum for the last part);
        // at most 10,000 parts per upload; a single PUT at most 5 GiB.
        match (req.method, query.get("uploadId"), query.get("partNumber")) {
            ("PUT", Some(upload), Some(part)) => {
                let number = part.parse::<u32>().unwrap_or(0);
                if !(1..=10_000).contains(&number) {
                    found.broke(format!(
                        "part number {part}; S3 allows 1 to 10,000 (qfacts.html)"
                    ));
                }
                if let Some(size) = size {
                    if size > 5 * GIB {
                        found.broke(format!(
                            "part {number} is {size} bytes; S3 allows 5 GiB (qfacts.html)"
                        ));
                    }
                    if let Ok(mut parts) = self.parts.lock() {
                        parts
                            .entry(upload.clone())
                            .or_default()
                            .insert(number, size);
                    }
                }
            }
            ("POST", Some(upload), None) => {
                let listed = xml_values(req.body, "PartNumber");
                if listed.len() > 10_000 {
                    found.broke(format!(
                        "{} parts; S3 allows 10,000 per upload (qfacts.html)",
                        listed.len()
                    ));
                }
                let numbers: Vec<u32> = listed.iter().filter_map(|n| n.parse().ok()).collect();
                let last = numbers.iter().max().copied();
                let sizes = self
                    .parts
                    .lock()
                    .ok()
                    .and_then(|mut p| p.remove(upload))
                    .unwrap_or_default();
                for n in numbers.iter().filter(|n| Some(**n) != last) {
                    if let Some(size) = sizes.get(n).filter(|s| **s < 5 * MIB) {
                        found.broke(format!(
                            "part {n} of {} is {size} bytes; every part but the last must be at \
                             least 5 MiB (qfacts.html)",
                            numbers.len()
                        ));
                    }
                }
            }
            ("DELETE", Some(upload), None) => {
                if let Ok(mut parts) = self.parts.lock() {
                    parts.remove(upload);
                }
            }
            ("PUT", None, None) if req.header("x-amz-copy-source").is_none() => {
                if let Some(size) = size.filter(|s| *s > 5 * GIB) {
                    found.broke(format!(
                        "a single PUT of {size} bytes; S3 allows 5 GiB (qfacts.html)"
                    ));
                }
            }
            ("POST", None, None) if query.contains_key("delete") => {
                // https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html
                // "you can specify up to 1,000 keys"
                let keys = xml_values(req.body, "Key").len();
                if keys > 1000 {
                    found.broke(format!(
                        "DeleteObjects names {keys} keys; S3 allows 1,000 (API_DeleteObjects.html)"
                    ));
                }
            }
            _ => {}
        }
    }
}

/// The violations of one request, named after its operation.
struct Found {
    operation: String,
    violations: Vec<Violation>,
}

impl Found {
    fn new(operation: &str) -> Found {
        Found {
            operation: operation.to_string(),
            violations: Vec::new(),
        }
    }

    fn broke(&mut self, message: String) {
        self.violations.push(Violation {
            operation: self.operation.clone(),
            message,
        });
    }

    /// `value`'s length in characters must lie in `allowed`; `limit` says what allows it.
    fn length(&mut self, what: &str, value: &str, allowed: RangeInclusive<usize>, limit: &str) {
        let n = value.chars().count();
        if !allowed.contains(&n) {
            self.broke(format!("{what} is {n} characters; {limit}"));
        }
    }

    fn op(&self) -> &str {
        self.operation.split_once(':').map_or("", |(_, op)| op)
    }
}

/// EC2's query protocol.
fn check_ec2(found: &mut Found, params: &[(String, String)]) {
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    // https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html
    // "A client token is a unique, case-sensitive string of up to 64 ASCII characters."
    if let Some(token) = param("ClientToken") {
        if token.len() > 64 || !token.is_ascii() {
            found.broke(format!(
                "ClientToken {token:?} is {} characters; EC2 allows up to 64 ASCII characters \
                 (ec2-api-idempotency.html)",
                token.chars().count()
            ));
        }
    }
    check_ec2_tags(found, params);
    match found.op() {
        "CreateImage" | "CopyImage" | "RegisterImage" => {
            // https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html
            // Name: "Constraints: 3-128 alphanumeric characters, parentheses (()), square
            // brackets ([]), spaces ( ), periods (.), slashes (/), dashes (-), single quotes
            // ('), at-signs (@), or underscores(_)"
            if let Some(name) = param("Name") {
                let allowed = |c: char| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c);
                let n = name.chars().count();
                if !(3..=128).contains(&n) || !name.chars().all(allowed) {
                    found.broke(format!(
                        "AMI name {name:?} ({n} characters); EC2 allows 3-128 of letters, \
                         digits and ()[] ./-'@_ (API_CreateImage.html)"
                    ));
                }
            }
            check_description(found, param("Description"));
        }
        // https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateSnapshot.html
        // (and CreateSnapshots, CreateVolume's snapshot descriptions): up to 255 characters.
        "CreateSnapshot" | "CreateSnapshots" | "CopySnapshot" => {
            check_description(found, param("Description"))
        }
        _ => {}
    }
}

fn check_description(found: &mut Found, description: Option<&String>) {
    if let Some(d) = description.filter(|d| d.chars().count() > 255) {
        found.broke(format!(
            "Description is {} characters; EC2 allows 255",
            d.chars().count()
        ));
    }
}

/// Tags in `TagSpecification.N.Tag.M.{Key,Value}` (one set per resource type) and
/// `Tag.M.{Key,Value}` (CreateTags).
///
/// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions
/// "Maximum number of tags per resource – 50"; "Maximum key length – 128 Unicode
/// characters"; "Maximum value length – 256 Unicode characters"; "Don't use the aws: prefix
/// … you can't edit or delete tag keys or values with this prefix".
fn check_ec2_tags(found: &mut Found, params: &[(String, String)]) {
    // Set (`TagSpecification.N`, or `` for CreateTags) → tag index → (key, value).
    type Tags = BTreeMap<String, (Option<String>, Option<String>)>;
    let mut sets: BTreeMap<String, Tags> = BTreeMap::new();
    for (k, v) in params {
        let Some((set, rest)) = k
            .find("Tag.")
            .filter(|i| *i == 0 || k[..*i].ends_with('.'))
            .map(|i| (&k[..i], &k[i + 4..]))
        else {
            continue;
        };
        let Some((index, field)) = rest.split_once('.') else {
            continue;
        };
        let entry = sets
            .entry(set.to_string())
            .or_default()
            .entry(index.to_string())
            .or_default();
        match field {
            "Key" => entry.0 = Some(v.clone()),
            "Value" => entry.1 = Some(v.clone()),
            _ => {}
        }
    }
    for (set, tags) in sets {
        let set = if set.is_empty() {
            "Tag"
        } else {
            set.trim_end_matches('.')
        };
        if tags.len() > 50 {
            found.broke(format!(
                "{set} has {} tags; EC2 allows 50 per resource (Using_Tags.html)",
                tags.len()
            ));
        }
        for (key, value) in tags.values() {
            let key = key.as_deref().unwrap_or_default();
            let n = key.chars().count();
            if n == 0 || n > 128 {
                found.broke(format!(
                    "tag key {key:?} is {n} characters; EC2 allows 1-128 (Using_Tags.html)"
                ));
            }
            if key.to_ascii_lowercase().starts_with("aws:") {
                found.broke(format!(
                    "tag key {key:?}: the aws: prefix is reserved for AWS (Using_Tags.html)"
                ));
            }
            if let Some(v) = value.as_deref().filter(|v| v.chars().count() > 256) {
                found.broke(format!(
                    "tag {key:?} has a value of {} characters; EC2 allows 256 (Using_Tags.html)",
                    v.chars().count()
                ));
            }
        }
    }
}

/// Step Functions' quotas on payloads.
/// https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html
/// "Maximum input or output size for a task, state, or execution: 256 KiB of data as a UTF-8
/// encoded string."
const SFN_PAYLOAD: usize = 256 * 1024;

/// The JSON protocol.
fn check_json(found: &mut Found, body: &Value) {
    let text = |name: &str| body.get(name).and_then(Value::as_str);
    match found.operation.as_str() {
        "states:StartExecution" | "states:CreateStateMachine" => {
            // https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html
            // name: "Length Constraints: Minimum length of 1. Maximum length of 80." and must
            // not contain white space, brackets < > { } [ ], wildcard characters ? *, special
            // characters " # % \ ^ | ~ ` $ & , ; : /, control characters (U+0000-001F,
            // U+007F-009F) or surrogates.
            if let Some(name) = text("name") {
                let bad = |c: char| {
                    c.is_whitespace()
                        || "<>{}[]?*\"#%\\^|~`$&,;:/".contains(c)
                        || ('\u{0}'..='\u{1f}').contains(&c)
                        || ('\u{7f}'..='\u{9f}').contains(&c)
                };
                let n = name.chars().count();
                if !(1..=80).contains(&n) || name.chars().any(bad) {
                    found.broke(format!(
                        "name {name:?} ({n} characters); Step Functions allows 1-80 characters \
                         without white space, brackets, wildcards or \"#%\\^|~`$&,;:/ \
                         (API_StartExecution.html)"
                    ));
                }
            }
            if let Some(input) = text("input").filter(|i| i.len() > SFN_PAYLOAD) {
                found.broke(format!(
                    "input is {} bytes; Step Functions allows 256 KiB (service-quotas.html)",
                    input.len()
                ));
            }
            // https://docs.aws.amazon.com/step-functions/latest/apireference/API_CreateStateMachine.html
            // definition: "Maximum length of 1048576."
            if let Some(d) = text("definition").filter(|d| d.chars().count() > 1_048_576) {
                found.broke(format!(
                    "definition is {} characters; Step Functions allows 1,048,576",
                    d.chars().count()
                ));
            }
        }
        "states:ListExecutions" | "states:GetExecutionHistory" | "states:ListStateMachines" => {
            // https://docs.aws.amazon.com/step-functions/latest/apireference/API_ListExecutions.html
            // maxResults: "Valid Range: Minimum value of 0. Maximum value of 1000."
            if let Some(n) = body.get("maxResults").and_then(Value::as_i64) {
                if !(0..=1000).contains(&n) {
                    found.broke(format!("maxResults {n}; Step Functions allows 0-1000"));
                }
            }
        }
        "states:StopExecution" | "states:SendTaskFailure" => check_error_cause(found, body),
        "events:PutEvents" => check_put_events(found, body),
        "codepipeline:PutJobFailureResult" => {
            // https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_FailureDetails.html
            // message: "Minimum length of 1. Maximum length of 5000."; externalExecutionId:
            // "Minimum length of 1. Maximum length of 1500."
            let details = &body["failureDetails"];
            let message = details["message"].as_str().unwrap_or_default();
            found.length(
                "failureDetails.message",
                message,
                1..=5000,
                "CodePipeline allows 1-5000 (API_FailureDetails.html)",
            );
            check_external_id(found, details.get("externalExecutionId"));
        }
        "codepipeline:PutJobSuccessResult" => {
            // https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_ExecutionDetails.html
            // summary: "Minimum length of 1. Maximum length of 2048."
            let details = &body["executionDetails"];
            if let Some(summary) = details["summary"].as_str() {
                found.length(
                    "executionDetails.summary",
                    summary,
                    1..=2048,
                    "CodePipeline allows 1-2048 (API_ExecutionDetails.html)",
                );
            }
            check_external_id(found, details.get("externalExecutionId"));
            // https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_PutJobSuccessResult.html
            // continuationToken: "Maximum length of 2048."
            if let Some(token) = text("continuationToken") {
                found.length(
                    "continuationToken",
                    token,
                    0..=2048,
                    "CodePipeline allows 2048",
                );
            }
        }
        "secretsmanager:GetSecretValue" | "secretsmanager:DescribeSecret" => {
            // https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html
            // SecretId: "Minimum length of 1. Maximum length of 2048."
            let id = text("SecretId").unwrap_or_default();
            found.length("SecretId", id, 1..=2048, "Secrets Manager allows 1-2048");
        }
        _ => {}
    }
}

fn check_external_id(found: &mut Found, id: Option<&Value>) {
    if let Some(id) = id.and_then(Value::as_str) {
        found.length(
            "externalExecutionId",
            id,
            1..=1500,
            "CodePipeline allows 1-1500",
        );
    }
}

/// https://docs.aws.amazon.com/step-functions/latest/apireference/API_DescribeExecution.html
/// error: "Maximum length of 256."; cause: "Maximum length of 32768."
fn check_error_cause(found: &mut Found, body: &Value) {
    for (field, max) in [("error", 256), ("cause", 32_768)] {
        if let Some(s) = body.get(field).and_then(Value::as_str) {
            let n = s.chars().count();
            if n > max {
                found.broke(format!(
                    "{field} is {n} characters; Step Functions allows {max} \
                     (API_DescribeExecution.html)"
                ));
            }
        }
    }
}

/// Every `input`/`output` (256 KiB), `error` (256) and `cause` (32,768) anywhere in an
/// answer: an execution, a history event's details.
fn check_execution_payloads(found: &mut Found, body: &Value) {
    match body {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("input" | "output", Value::String(s)) if s.len() > SFN_PAYLOAD => {
                        found.broke(format!(
                            "an execution carried {k} of {} bytes; Step Functions ends it with \
                             States.DataLimitExceeded above 256 KiB (service-quotas.html)",
                            s.len()
                        ))
                    }
                    ("error", Value::String(s)) if s.chars().count() > 256 => found.broke(format!(
                        "an execution carried an error of {} characters; Step Functions allows \
                         256 (API_DescribeExecution.html)",
                        s.chars().count()
                    )),
                    ("cause", Value::String(s)) if s.chars().count() > 32_768 => {
                        found.broke(format!(
                            "an execution carried a cause of {} characters; Step Functions allows \
                         32,768 (API_DescribeExecution.html)",
                            s.chars().count()
                        ))
                    }
                    _ => check_execution_payloads(found, v),
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| check_execution_payloads(found, v)),
        _ => {}
    }
}

/// https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEvents.html
/// Entries: "Array Members: Minimum number of 1 item. Maximum number of 10 items."
/// https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-putevent-size.html
/// An entry's size (Time 14 bytes; Source, DetailType, Detail and each Resource by their
/// UTF-8 bytes) must be under 256 KB; Detail must be a JSON object.
fn check_put_events(found: &mut Found, body: &Value) {
    let entries = body["Entries"].as_array().cloned().unwrap_or_default();
    if !(1..=10).contains(&entries.len()) {
        found.broke(format!(
            "{} entries; EventBridge allows 1-10 per PutEvents (API_PutEvents.html)",
            entries.len()
        ));
    }
    for e in &entries {
        let bytes = |name: &str| e[name].as_str().map_or(0, str::len);
        let resources: usize = e["Resources"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).map(str::len).sum())
            .unwrap_or(0);
        let size = if e.get("Time").is_some() { 14 } else { 0 }
            + bytes("Source")
            + bytes("DetailType")
            + bytes("Detail")
            + resources;
        if size >= 256 * 1024 {
            found.broke(format!(
                "an entry of {size} bytes; EventBridge takes entries under 256 KB \
                 (eb-putevent-size.html)"
            ));
        }
        if let Some(detail) = e["Detail"].as_str() {
            if !matches!(serde_json::from_str::<Value>(detail), Ok(Value::Object(_))) {
                found.broke("Detail is not a JSON object (API_PutEvents.html)".into());
            }
        }
    }
}

/// The key of a path-style (`/bucket/key`) or virtual-hosted (`bucket.s3.…` + `/key`) S3
/// request, percent-decoded; `None` for a bucket-level request.
fn s3_key(host: &str, path: &str) -> Option<String> {
    let virtual_hosted = host.contains(".s3.") || host.contains(".s3-");
    let rest = path.strip_prefix('/')?;
    let key = if virtual_hosted {
        rest
    } else {
        rest.split_once('/').map(|(_, k)| k)?
    };
    (!key.is_empty()).then(|| percent_decode(key))
}

/// A name for an S3 request, for messages.
fn s3_operation(req: &WireRequest) -> String {
    let query = req.target.split_once('?').map_or("", |(_, q)| q);
    let has = |p: &str| {
        query
            .split('&')
            .any(|kv| kv == p || kv.starts_with(&format!("{p}=")))
    };
    match req.method {
        "PUT" if has("partNumber") => "UploadPart",
        "PUT" => "PutObject",
        "POST" if has("uploads") => "CreateMultipartUpload",
        "POST" if has("uploadId") => "CompleteMultipartUpload",
        "POST" if has("delete") => "DeleteObjects",
        "DELETE" if has("uploadId") => "AbortMultipartUpload",
        "DELETE" => "DeleteObject",
        "HEAD" => "HeadObject",
        _ if has("list-type") => "ListObjectsV2",
        _ => "GetObject",
    }
    .to_string()
}

/// `a=1&b=x%20y` as decoded pairs (`+` is a space, as in forms).
fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The texts of every `<tag>…</tag>` in an XML body.
fn xml_values(body: &[u8], tag: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        out.push(rest[..end].trim().to_string());
        rest = &rest[end + close.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ec2(body: &str) -> Vec<Violation> {
        let h = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        Limits::new().check_request(&WireRequest {
            method: "POST",
            target: "/",
            host: "127.0.0.1",
            headers: &h,
            body: body.as_bytes(),
        })
    }

    fn json(target: &str, body: &Value) -> Vec<Violation> {
        let h = headers(&[("x-amz-target", target)]);
        let body = body.to_string();
        Limits::new().check_request(&WireRequest {
            method: "POST",
            target: "/",
            host: "127.0.0.1",
            headers: &h,
            body: body.as_bytes(),
        })
    }

    #[test]
    fn a_client_token_over_64_characters_is_refused_and_64_accepted() {
        let action = "Action=CreateReplaceRootVolumeTask&Version=2016-11-15&InstanceId=i-1";
        let ok = format!("{action}&ClientToken={}", "a".repeat(64));
        assert_eq!(ec2(&ok), vec![]);
        let long = format!("{action}&ClientToken={}", "a".repeat(65));
        let v = ec2(&long);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].operation, "ec2:CreateReplaceRootVolumeTask");
        assert!(v[0].message.contains("64 ASCII"), "{}", v[0]);
    }

    #[test]
    fn tags_past_ec2s_limits_are_refused() {
        let mut body =
            "Action=CreateSnapshots&TagSpecification.1.ResourceType=snapshot".to_string();
        for i in 1..=50 {
            body.push_str(&format!(
                "&TagSpecification.1.Tag.{i}.Key=k{i}&TagSpecification.1.Tag.{i}.Value=v"
            ));
        }
        assert_eq!(ec2(&body), vec![]);
        body.push_str("&TagSpecification.1.Tag.51.Key=k51&TagSpecification.1.Tag.51.Value=v");
        assert!(ec2(&body)[0].message.contains("51 tags"));

        let create_tags = |key: &str, value: &str| {
            ec2(&format!(
                "Action=CreateTags&ResourceId.1=vol-1&Tag.1.Key={key}&Tag.1.Value={value}"
            ))
        };
        assert_eq!(create_tags(&"k".repeat(128), &"v".repeat(256)), vec![]);
        assert_eq!(create_tags(&"k".repeat(129), "v").len(), 1);
        assert_eq!(create_tags("k", &"v".repeat(257)).len(), 1);
        assert_eq!(create_tags("aws%3Aname", "v").len(), 1);
    }

    #[test]
    fn an_ami_name_must_be_3_to_128_allowed_characters() {
        let image = |name: &str| ec2(&format!("Action=CreateImage&InstanceId=i-1&Name={name}"));
        assert_eq!(image("backstop-shop-(1)_a.b%2Fc%40d"), vec![]);
        assert_eq!(image(&"n".repeat(128)), vec![]);
        assert_eq!(image(&"n".repeat(129)).len(), 1);
        assert_eq!(image("ab").len(), 1);
        assert_eq!(image("shop%3Aprod").len(), 1);
    }

    #[test]
    fn execution_names_inputs_and_causes_keep_step_functions_limits() {
        let start = |name: &str, input: &str| {
            json(
                "AWSStepFunctions.StartExecution",
                &serde_json::json!({"stateMachineArn": "arn", "name": name, "input": input}),
            )
        };
        assert_eq!(start(&"n".repeat(80), "{}"), vec![]);
        assert_eq!(start(&"n".repeat(81), "{}").len(), 1);
        assert_eq!(start("shop:1", "{}").len(), 1);
        assert_eq!(start("shop 1", "{}").len(), 1);
        let big = format!("\"{}\"", "x".repeat(SFN_PAYLOAD));
        assert_eq!(start("shop", &big).len(), 1);

        let limits = Limits::new();
        let h = headers(&[("x-amz-target", "AWSStepFunctions.DescribeExecution")]);
        let req = WireRequest {
            method: "POST",
            target: "/",
            host: "127.0.0.1",
            headers: &h,
            body: b"{}",
        };
        let answer = |cause: usize| {
            serde_json::json!({"status": "FAILED", "error": "DeployFailed",
                "cause": "c".repeat(cause)})
            .to_string()
        };
        assert_eq!(
            limits.check_response(&req, answer(32_768).as_bytes()),
            vec![]
        );
        assert_eq!(
            limits.check_response(&req, answer(32_769).as_bytes()).len(),
            1
        );
    }

    #[test]
    fn put_events_takes_1_to_10_entries_under_256_kb_with_json_details() {
        let entry = |detail: &str| {
            serde_json::json!({"Source": "backstop", "DetailType": "Backup Succeeded",
                "Detail": detail})
        };
        let put = |entries: Vec<Value>| {
            json(
                "AWSEvents.PutEvents",
                &serde_json::json!({"Entries": entries}),
            )
        };
        assert_eq!(put(vec![entry("{}")]), vec![]);
        assert_eq!(put(vec![entry("{}"); 11]).len(), 1);
        assert_eq!(put(vec![entry("[1]")]).len(), 1);
        let big = format!("{{\"x\":\"{}\"}}", "x".repeat(256 * 1024));
        assert_eq!(put(vec![entry(&big)]).len(), 1);
    }

    #[test]
    fn codepipeline_failure_messages_keep_5000_characters() {
        let fail = |n: usize| {
            json(
                "CodePipeline_20150709.PutJobFailureResult",
                &serde_json::json!({"jobId": "j", "failureDetails":
                    {"type": "JobFailed", "message": "m".repeat(n)}}),
            )
        };
        assert_eq!(fail(5000), vec![]);
        assert_eq!(fail(5001).len(), 1);
        assert_eq!(fail(0).len(), 1);
    }

    #[test]
    fn s3_keys_parts_and_metadata_keep_s3s_limits() {
        let limits = Limits::new();
        let send = |method: &str, target: &str, h: &[(&str, &str)], body: &[u8]| {
            let h = headers(h);
            limits.check_request(&WireRequest {
                method,
                target,
                host: "127.0.0.1:5000",
                headers: &h,
                body,
            })
        };
        let key = "k".repeat(1024);
        assert_eq!(send("PUT", &format!("/b/{key}"), &[], b""), vec![]);
        assert_eq!(send("PUT", &format!("/b/{key}x"), &[], b"").len(), 1);
        // A key of 512 two-byte characters is 1,024 bytes; one more is too long.
        let wide = "%C3%A9".repeat(513);
        assert_eq!(send("PUT", &format!("/b/{wide}"), &[], b"").len(), 1);
        let meta = "m".repeat(2040);
        assert_eq!(
            send("PUT", "/b/k", &[("x-amz-meta-abcdefghi", &meta)], b"").len(),
            1
        );

        let five_mib = (5 * 1024 * 1024).to_string();
        let part = |n: u32, size: &str| {
            send(
                "PUT",
                &format!("/b/k?partNumber={n}&uploadId=u1"),
                &[("content-length", size)],
                b"",
            )
        };
        assert_eq!(part(1, &five_mib), vec![]);
        assert_eq!(part(2, "10"), vec![]);
        assert_eq!(part(3, "10"), vec![]);
        assert_eq!(part(10_001, "10").len(), 1);
        let complete = b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part>\
            <Part><PartNumber>2</PartNumber></Part><Part><PartNumber>3</PartNumber></Part>\
            </CompleteMultipartUpload>";
        let v = send("POST", "/b/k?uploadId=u1", &[], complete);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].message.contains("part 2 of 3"), "{}", v[0]);

        let keys: String = (0..1001)
            .map(|i| format!("<Object><Key>k{i}</Key></Object>"))
            .collect();
        let delete = format!("<Delete>{keys}</Delete>");
        assert_eq!(send("POST", "/b?delete", &[], delete.as_bytes()).len(), 1);
    }

    #[test]
    fn requests_are_named_by_protocol() {
        let h = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        let req = WireRequest {
            method: "POST",
            target: "/",
            host: "ec2.us-east-1.amazonaws.com",
            headers: &h,
            body: b"Action=DescribeVolumes&Version=2016-11-15",
        };
        assert_eq!(
            classify(&req),
            (Protocol::Query, "ec2:DescribeVolumes".into())
        );
        let req = WireRequest {
            target: "/moto-api/config",
            ..req
        };
        assert_eq!(classify(&req).0, Protocol::Emulator);
        let req = WireRequest {
            method: "GET",
            target: "/b?list-type=2&prefix=backstop%2F",
            headers: &[],
            body: b"",
            host: "127.0.0.1",
        };
        assert_eq!(classify(&req), (Protocol::S3, "s3:ListObjectsV2".into()));
    }
}
