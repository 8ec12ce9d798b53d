//! `backstop-local`: the local default, a binary of its own so the shipped `backstop` does not
//! link the test bed. It starts moto (S3, EC2, Secrets Manager and a Step Functions engine that
//! executes ASL) and serves the Lambda Invoke API on moto's `MOTO_PORT`: the project's
//! functions run in this process over the same typed handlers as the Lambdas
//! (`backstop_core::tasks::invoke`), `--function NAME=COMMAND` adds stand-ins for the user's
//! functions (a deploy), and every other request is forwarded to moto. It creates the bucket
//! and the state machine from `statemachine/protect.asl.json` with the template's
//! substitution names, prints one JSON line saying where everything is, and runs until Ctrl-C
//! or SIGTERM, then stops moto. The functions' settings come from the environment as in a
//! deployment (`BACKSTOP_EVENT_BUS`, `PG_BIN_DIR`, …), the bucket and prefix from the
//! arguments.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use aws_config::Region;
use backstop_core::catalog::DEFAULT_PREFIX;
use backstop_core::tasks::{invoke, FUNCTIONS};
use backstop_core::{Config, Context, Error};
use backstop_testbed::Moto;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Run the local default: moto with its Step Functions engine, the project's functions served
/// on its Lambda port, the bucket and the protect state machine. Prints one JSON line
/// (endpoint, state_machine_arn, …) and runs until Ctrl-C.
#[derive(Parser)]
#[command(name = "backstop-local", version)]
struct Args {
    #[arg(long, default_value = "backstop-local")]
    bucket: String,
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// A stand-in for one of your functions (a deploy): NAME=SHELL-COMMAND, run with the
    /// payload on stdin; a non-zero exit is a function error (repeatable).
    #[arg(long = "function", value_parser = name_command)]
    functions: Vec<(String, String)>,
}

/// `NAME=COMMAND`, both non-empty.
fn name_command(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, cmd)) if !name.is_empty() && !cmd.is_empty() => {
            Ok((name.to_string(), cmd.to_string()))
        }
        _ => Err(format!("{text:?} is not NAME=COMMAND")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BACKSTOP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = LocalOptions {
        bucket: args.bucket,
        prefix: args.prefix,
        region: args.region,
        functions: args.functions.into_iter().collect(),
    };
    match runtime.block_on(run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}: {e}", e.error_type());
            ExitCode::FAILURE
        }
    }
}

/// The account moto uses.
pub const ACCOUNT: &str = "123456789012";

/// The state machine definition, as the template deploys it.
pub const DEFINITION: &str = include_str!("../../../statemachine/protect.asl.json");

/// The substitution names the template fills in, and the function each names.
pub const SUBSTITUTIONS: [(&str, &str); 4] = [
    ("StartBackupFunctionArn", "start-backup"),
    ("PollJobFunctionArn", "poll-job"),
    ("RestoreFunctionArn", "restore"),
    ("VerifyFunctionArn", "verify"),
];

/// The definition with every `${Name}` replaced by the local function ARN, and
/// `${Partition}` by `aws`.
pub fn local_definition(region: &str) -> String {
    let mut def = DEFINITION.replace("${Partition}", "aws");
    for (name, function) in SUBSTITUTIONS {
        def = def.replace(
            &format!("${{{name}}}"),
            &format!("arn:aws:lambda:{region}:{ACCOUNT}:function:backstop-{function}"),
        );
    }
    def
}

pub struct LocalOptions {
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    /// Stand-in functions: name → shell command (payload on stdin).
    pub functions: BTreeMap<String, String>,
}

struct Router {
    ctx: Context,
    moto_port: u16,
    functions: BTreeMap<String, String>,
}

/// Runs the local default until Ctrl-C or SIGTERM.
pub async fn run(opts: LocalOptions) -> Result<(), Error> {
    let io = |what: &str, e: std::io::Error| Error::InvalidInput(format!("{what}: {e}"));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| io("binding the invoke router", e))?;
    let router_port = listener
        .local_addr()
        .map_err(|e| io("the invoke router's address", e))?
        .port();
    let port_text = router_port.to_string();
    let moto = Moto::start_with_env(&[("MOTO_PORT", port_text.as_str())])
        .map_err(|e| Error::InvalidInput(format!("cannot start moto: {e}")))?;
    post_json(
        moto.port,
        "/moto-api/config",
        r#"{"stepfunctions":{"execute_state_machine":true},"lambda":{"use_docker":false}}"#,
    )
    .await?;
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(backstop_core::aws::retry_config())
        .endpoint_url(&moto.endpoint)
        .region(Region::new(opts.region.clone()))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "backstop-local",
        ))
        .load()
        .await;
    let s3 = backstop_core::aws::s3_client(&shared);
    let made = s3.create_bucket().bucket(&opts.bucket).send().await;
    if let Err(e) = made {
        let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e).unwrap_or("");
        if code != "BucketAlreadyOwnedByYou" && code != "BucketAlreadyExists" {
            return Err(Error::Storage {
                operation: "CreateBucket",
                bucket: opts.bucket.clone(),
                key: String::new(),
                reason: aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                source: Some(Box::new(e)),
            });
        }
    }
    let sfn = aws_sdk_sfn::Client::new(&shared);
    let created = sfn
        .create_state_machine()
        .name("backstop-protect")
        .definition(local_definition(&opts.region))
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/backstop-local"))
        .send()
        .await
        .map_err(|e| {
            Error::InvalidInput(format!(
                "creating the state machine: {}",
                aws_sdk_sfn::error::DisplayErrorContext(&e)
            ))
        })?;
    let mut config = Config::from_env()?;
    config.bucket = opts.bucket.clone();
    config.prefix = opts.prefix.clone();
    let router = Arc::new(Router {
        ctx: Context::new(shared.clone(), config)?,
        moto_port: moto.port,
        functions: opts.functions,
    });
    let ready = serde_json::json!({
        "endpoint": moto.endpoint,
        "router": format!("http://127.0.0.1:{router_port}"),
        "moto_pid": moto.pid(),
        "bucket": opts.bucket,
        "region": opts.region,
        "state_machine_arn": created.state_machine_arn(),
    });
    println!("{ready}");
    let serve = async {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let router = router.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_one(&router, conn).await {
                    tracing::warn!(error = %e, "invoke router connection failed");
                }
            });
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = shutdown() => {}
    }
    drop(moto);
    Ok(())
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// One request read off a connection.
struct Request {
    method: String,
    path: String,
    head: Vec<String>,
    body: Vec<u8>,
}

/// Where Lambda's Invoke API lives.
const INVOKE_PREFIX: &str = "/2015-03-31/functions/";

/// The most a request's head may hold.
const MAX_HEAD: usize = 64 * 1024;

/// The most an invocation's payload may hold: Lambda's limit for a synchronous Invoke.
const MAX_INVOKE_PAYLOAD: usize = 6 * 1024 * 1024;

/// The most a request forwarded to moto may hold (a part of a local dump is far smaller).
const MAX_FORWARDED: usize = 256 * 1024 * 1024;

/// What came off a connection.
enum Read {
    Request(Request),
    /// Over a limit: answered with 413 and not read further.
    TooLarge(String),
    Closed,
}

async fn read_request(conn: &mut TcpStream) -> std::io::Result<Read> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n");
        if end.unwrap_or(buf.len()) > MAX_HEAD {
            return Ok(Read::TooLarge(format!(
                "the request head is over {MAX_HEAD} bytes"
            )));
        }
        if let Some(i) = end {
            break i;
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Read::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head_text = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head_text.split("\r\n").map(str::to_string);
    let request_line = lines.next().unwrap_or_default();
    let head: Vec<String> = lines.collect();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let length = head
        .iter()
        .find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let limit = if path.starts_with(INVOKE_PREFIX) {
        MAX_INVOKE_PAYLOAD
    } else {
        MAX_FORWARDED
    };
    if length > limit {
        return Ok(Read::TooLarge(format!(
            "a body of {length} bytes is over this endpoint's {limit}"
        )));
    }
    let mut body = buf[head_end + 4..].to_vec();
    body.truncate(length);
    while body.len() < length {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        let take = n.min(length - body.len());
        body.extend_from_slice(&chunk[..take]);
    }
    let mut head_with_request = vec![request_line];
    head_with_request.extend(head);
    Ok(Read::Request(Request {
        method,
        path,
        head: head_with_request,
        body,
    }))
}

async fn serve_one(router: &Router, mut conn: TcpStream) -> std::io::Result<()> {
    let req = match read_request(&mut conn).await? {
        Read::Request(req) => req,
        Read::Closed => return Ok(()),
        Read::TooLarge(why) => {
            let body = serde_json::json!({
                "Type": "User",
                "message": format!("Request must be smaller than the limit: {why}"),
            })
            .to_string();
            let answer = format!(
                "HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n\
                 x-amzn-ErrorType: RequestEntityTooLargeException\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(answer.as_bytes()).await?;
            return conn.shutdown().await;
        }
    };
    match function_of(&req) {
        Some(name) => {
            let (status, error_type, body) = router.call(&name, &req.body).await;
            let mut head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nx-amz-executed-version: $LATEST\r\nConnection: close\r\n",
                body.len()
            );
            if let Some(t) = error_type {
                tracing::info!(function = %name, error = %t, "function error");
                head.push_str("X-Amz-Function-Error: Unhandled\r\n");
            }
            head.push_str("\r\n");
            conn.write_all(head.as_bytes()).await?;
            conn.write_all(&body).await?;
        }
        None => forward(router.moto_port, &req, &mut conn).await?,
    }
    conn.shutdown().await
}

/// `POST /2015-03-31/functions/<name or URL-encoded ARN>/invocations` → the function name.
fn function_of(req: &Request) -> Option<String> {
    if req.method != "POST" {
        return None;
    }
    let path = req.path.split('?').next()?;
    let rest = path.strip_prefix(INVOKE_PREFIX)?;
    let encoded = rest.strip_suffix("/invocations")?;
    let decoded = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .ok()?
        .to_string();
    // arn:aws:lambda:region:account:function:name[:qualifier]
    let name = match decoded.split_once(":function:") {
        Some((_, tail)) => tail.split(':').next().unwrap_or(tail).to_string(),
        None => decoded.split(':').next().unwrap_or(&decoded).to_string(),
    };
    Some(name)
}

impl Router {
    /// Runs a function; returns the HTTP status, the function error type if it failed, and
    /// the response body.
    async fn call(&self, name: &str, body: &[u8]) -> (&'static str, Option<String>, Vec<u8>) {
        let error = |t: &str, m: String| {
            let body = serde_json::json!({"errorType": t, "errorMessage": m}).to_string();
            ("200 OK", Some(t.to_string()), body.into_bytes())
        };
        if let Some(command) = self.functions.get(name) {
            return match run_command(command, body).await {
                Ok(out) => ("200 OK", None, out),
                Err(message) => error("CommandFailed", message),
            };
        }
        let Some(function) = name
            .strip_prefix("backstop-")
            .filter(|f| FUNCTIONS.contains(f))
        else {
            let body = serde_json::json!({
                "Type": "User",
                "Message": format!("Function not found: {name}"),
            })
            .to_string();
            return ("404 Not Found", None, body.into_bytes());
        };
        let payload = match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(p) => p,
            Err(e) => return error("InvalidInput", format!("the payload is not JSON: {e}")),
        };
        match invoke(&self.ctx, function, payload).await {
            Ok(out) => ("200 OK", None, out.to_string().into_bytes()),
            Err(e) => error(e.error_type(), e.to_string()),
        }
    }
}

/// A stand-in function: `sh -c COMMAND` with the payload on stdin. Exit 0 answers its stdout
/// (as JSON when it is JSON); anything else is a function error carrying stderr's tail.
async fn run_command(command: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(payload).await;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let value = serde_json::from_str::<serde_json::Value>(&stdout)
            .unwrap_or_else(|_| serde_json::json!({ "output": stdout }));
        Ok(value.to_string().into_bytes())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        Err(format!(
            "{} ({})",
            tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
            out.status
        ))
    }
}

/// Sends the request to moto with `Connection: close` and copies the answer back.
async fn forward(moto_port: u16, req: &Request, conn: &mut TcpStream) -> std::io::Result<()> {
    let mut upstream = TcpStream::connect(("127.0.0.1", moto_port)).await?;
    let mut head: Vec<String> = req
        .head
        .iter()
        .filter(|h| {
            !h.split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("connection")
        })
        .cloned()
        .collect();
    head.push("Connection: close".to_string());
    let text = format!("{}\r\n\r\n", head.join("\r\n"));
    upstream.write_all(text.as_bytes()).await?;
    upstream.write_all(&req.body).await?;
    tokio::io::copy(&mut upstream, conn).await?;
    Ok(())
}

/// A POST of a small JSON body; fails unless the answer is 2xx.
async fn post_json(port: u16, path: &str, body: &str) -> Result<(), Error> {
    let fail = |why: String| Error::InvalidInput(format!("POST {path} to moto: {why}"));
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&answer);
    if text.starts_with("HTTP/1.1 2") || text.starts_with("HTTP/1.0 2") {
        Ok(())
    } else {
        Err(fail(text.lines().next().unwrap_or("no answer").to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_substitution_is_filled_and_names_a_function() {
        let def = local_definition("us-east-1");
        assert!(!def.contains("${"), "an unfilled substitution remains");
        for (name, function) in SUBSTITUTIONS {
            assert!(
                DEFINITION.contains(&format!("${{{name}}}")),
                "{name} unused"
            );
            assert!(FUNCTIONS.contains(&function));
        }
    }

    #[test]
    fn invoke_paths_name_the_function_by_name_or_encoded_arn() {
        let req = |path: &str| Request {
            method: "POST".to_string(),
            path: path.to_string(),
            head: Vec::new(),
            body: Vec::new(),
        };
        assert_eq!(
            function_of(&req("/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Abackstop-verify/invocations")),
            Some("backstop-verify".to_string())
        );
        assert_eq!(
            function_of(&req("/2015-03-31/functions/shop-migrate/invocations")),
            Some("shop-migrate".to_string())
        );
        assert_eq!(
            function_of(&req("/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Adeploy%3Aprod/invocations")),
            Some("deploy".to_string())
        );
        assert_eq!(function_of(&req("/?Action=ListBuckets")), None);
    }
}
