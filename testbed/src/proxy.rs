//! A fault-injecting HTTP/1.1 forwarding proxy on 127.0.0.1 (std threads + std::net) that
//! also holds every request to AWS's documented limits ([`crate::limits`]).
//! Each client connection carries exactly one request: it is forwarded to the upstream over
//! a fresh connection (with `Connection: close`) and the whole response relayed back, or
//! answered with an injected S3-style XML error, or, when it breaks an AWS limit, refused
//! with the error AWS would give in the request's protocol and recorded as a violation. The
//! accept loop stops when the [`FaultProxy`] is dropped.

use crate::limits::{classify, Limits, Protocol, Violation, WireRequest};
use crate::TestbedError;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const MAX_HEAD: usize = 64 * 1024;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(300);
const FAULT_BODY: &str =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>injected</Message></Error>";

/// Which requests the proxy answers with an injected error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Forward the first `after` requests whose request-target (path+query) contains `matching`,
    /// then answer every later matching request with HTTP `status` (an S3-style XML error body
    /// `<Error><Code>InternalError</Code><Message>injected</Message></Error>`). Non-matching
    /// requests are always forwarded.
    FailAfter {
        matching: String,
        after: usize,
        status: u16,
    },
    /// Read every request whose request-target contains `matching` and never answer it (a
    /// stalled connection), until the proxy stops.
    Stall { matching: String },
}

/// An HTTP/1.1 forwarding proxy on 127.0.0.1 at a free port in front of `upstream`,
/// injecting faults; stopped (thread ends, listener closed) on drop.
#[derive(Debug)]
pub struct FaultProxy {
    pub port: u16,
    /// "http://127.0.0.1:PORT"
    pub endpoint: String,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    fault: Fault,
    stop: AtomicBool,
    matched: AtomicUsize,
    injected: AtomicUsize,
    limits: Limits,
    violations: Mutex<Vec<Violation>>,
}

impl FaultProxy {
    /// Starts the proxy in front of `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16, fault: Fault) -> Result<FaultProxy, TestbedError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| TestbedError::io("binding the fault proxy", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| TestbedError::io("reading the fault proxy address", e))?
            .port();
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            fault,
            stop: AtomicBool::new(false),
            matched: AtomicUsize::new(0),
            injected: AtomicUsize::new(0),
            limits: Limits::new(),
            violations: Mutex::new(Vec::new()),
        });
        let thread_shared = Arc::clone(&shared);
        let accept_thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || accept_loop(listener, thread_shared))
            .map_err(|e| TestbedError::io("spawning the fault proxy thread", e))?;
        Ok(FaultProxy {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            shared,
            accept_thread: Some(accept_thread),
        })
    }

    /// How many matching requests were answered with an injected fault so far.
    pub fn injected(&self) -> usize {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// Every request so far that AWS would have refused, and every answer AWS could not have
    /// given (an execution past Step Functions' payload limits).
    pub fn violations(&self) -> Vec<Violation> {
        self.shared
            .violations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so it sees the stop flag.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else {
            continue;
        };
        let shared = Arc::clone(&shared);
        // Connection threads end on their own (one request each, with timeouts).
        let _ = std::thread::Builder::new()
            .name("fault-proxy-conn".into())
            .spawn(move || {
                let _ = handle_connection(stream, &shared);
            });
    }
}

/// A parsed request: the raw head's lines plus the raw (possibly chunked) body bytes.
struct Request {
    method: String,
    target: String,
    /// Header lines after the request line, without CRLF.
    headers: Vec<String>,
    body: Vec<u8>,
}

fn handle_connection(mut client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    client.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    client.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let Some(req) = read_request(&mut client)? else {
        return Ok(()); // closed before a full request (e.g. the wake-up connect)
    };
    if let Fault::Stall { matching } = &shared.fault {
        if req.target.contains(matching.as_str()) {
            shared.injected.fetch_add(1, Ordering::SeqCst);
            while !shared.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
            return Ok(());
        }
    }
    let inject_status = match &shared.fault {
        Fault::None | Fault::Stall { .. } => None,
        Fault::FailAfter {
            matching,
            after,
            status,
        } => {
            if req.target.contains(matching.as_str()) {
                let n = shared.matched.fetch_add(1, Ordering::SeqCst);
                (n >= *after).then_some(*status)
            } else {
                None
            }
        }
    };
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| (header_name(h).to_string(), header_value(h).to_string()))
        .collect();
    let host = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(&req.body)
    } else {
        req.body.clone()
    };
    let wire = WireRequest {
        method: &req.method,
        target: &req.target,
        host: &host,
        headers: &headers,
        body: &body,
    };
    let broken = shared.limits.check_request(&wire);
    if !broken.is_empty() {
        let response = refusal(&wire, &broken);
        record(shared, broken);
        client.write_all(&response)?;
    } else if let Some(status) = inject_status {
        shared.injected.fetch_add(1, Ordering::SeqCst);
        let mut resp = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-amz-request-id: INJECTEDFAULT\r\nConnection: close\r\n\r\n",
            reason(status),
            FAULT_BODY.len()
        )
        .into_bytes();
        if !req.method.eq_ignore_ascii_case("HEAD") {
            resp.extend_from_slice(FAULT_BODY.as_bytes());
        }
        client.write_all(&resp)?;
    } else {
        let response = forward(&req, shared.upstream)?;
        if let Some(end) = find(&response, b"\r\n\r\n") {
            let answered = shared.limits.check_response(&wire, &response[end + 4..]);
            record(shared, answered);
        }
        client.write_all(&response)?;
    }
    client.flush()?;
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}

/// Keeps `found` and says each on stderr (the only place a server process can say it).
fn record(shared: &Shared, found: Vec<Violation>) {
    for v in &found {
        eprintln!("testbed limits: {v}");
    }
    if let Ok(mut all) = shared.violations.lock() {
        all.extend(found);
    }
}

/// AWS's answer to a request that breaks its limits, in the request's protocol: HTTP 400
/// with the error code AWS gives for an invalid parameter.
fn refusal(req: &WireRequest, broken: &[Violation]) -> Vec<u8> {
    let message: Vec<String> = broken.iter().map(ToString::to_string).collect();
    let message = message.join("; ");
    let (content_type, extra, body) = match classify(req).0 {
        Protocol::Json | Protocol::Cbor | Protocol::Emulator => (
            "application/x-amz-json-1.0",
            "x-amzn-errortype: ValidationException\r\n",
            serde_json::json!({"__type": "ValidationException", "message": &message}).to_string(),
        ),
        Protocol::Query => (
            "text/xml;charset=UTF-8",
            "",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
                 <Code>InvalidParameterValue</Code><Message>{}</Message></Error></Errors>\
                 <RequestID>testbed-limits</RequestID></Response>",
                xml_escape(&message)
            ),
        ),
        Protocol::S3 => (
            "application/xml",
            "",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidArgument</Code>\
                 <Message>{}</Message></Error>",
                xml_escape(&message)
            ),
        ),
    };
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\n\
         x-amz-request-id: TESTBEDLIMITS\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The data of a chunked body, without its framing.
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(eol) = find(rest, b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..eol]);
        let size = size.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            break;
        };
        if size == 0 || rest.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[(eol + 4 + size).min(rest.len())..];
    }
    out
}

/// Sends the request upstream on a fresh connection and returns the whole response
/// (read until upstream closes), with `Connection: close` set on it.
fn forward(req: &Request, upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut up = match TcpStream::connect_timeout(&upstream, Duration::from_secs(10)) {
        Ok(s) => s,
        Err(e) => {
            let body = format!("fault proxy: upstream {upstream} unreachable: {e}");
            return Ok(format!(
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes());
        }
    };
    up.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    up.set_write_timeout(Some(UPSTREAM_TIMEOUT))?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for h in &req.headers {
        let name = header_name(h);
        // We already answered any `Expect: 100-continue` ourselves.
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("expect") {
            continue;
        }
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&req.body);
    up.write_all(&out)?;
    up.flush()?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    Ok(set_connection_close(response))
}

/// Rewrites the response head so that it carries exactly one `Connection: close`.
fn set_connection_close(response: Vec<u8>) -> Vec<u8> {
    let Some(end) = find(&response, b"\r\n\r\n") else {
        return response;
    };
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut new_head = lines.next().unwrap_or_default().to_string();
    new_head.push_str("\r\n");
    for line in lines {
        if header_name(line).eq_ignore_ascii_case("connection") {
            continue;
        }
        new_head.push_str(line);
        new_head.push_str("\r\n");
    }
    new_head.push_str("Connection: close\r\n\r\n");
    let mut out = new_head.into_bytes();
    out.extend_from_slice(&response[end + 4..]);
    out
}

/// Reads one request (head, then a Content-Length or chunked body). `Ok(None)` when the
/// client closed before sending a complete head.
fn read_request(client: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut reader = BufReader::new();
    let head_end = loop {
        if let Some(i) = find(&reader.buf, b"\r\n\r\n") {
            break i;
        }
        if reader.buf.len() > MAX_HEAD {
            return Err(invalid("request head too large"));
        }
        if reader.fill(client)? == 0 {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&reader.buf[..head_end]).into_owned();
    reader.pos = head_end + 4;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    if method.is_empty() || target.is_empty() {
        return Err(invalid("malformed request line"));
    }
    let headers: Vec<String> = lines.map(str::to_string).collect();

    let header = |name: &str| {
        headers
            .iter()
            .filter(|h| header_name(h).eq_ignore_ascii_case(name))
            .map(|h| header_value(h))
            .next_back()
    };
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked(&mut reader, client)?
    } else {
        let len = match header("content-length") {
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| invalid("bad Content-Length"))?,
            None => 0,
        };
        reader.take(client, len)?
    };
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

/// Reads a chunked body through the terminating 0 chunk and trailers; returns the raw bytes.
fn read_chunked(reader: &mut BufReader, client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    loop {
        let line = reader.line(client)?;
        raw.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line);
        let size_str = text.trim_end().split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_str, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to and including the empty line.
            loop {
                let t = reader.line(client)?;
                raw.extend_from_slice(&t);
                if t == b"\r\n" || t == b"\n" {
                    return Ok(raw);
                }
            }
        }
        // Chunk data plus its CRLF.
        raw.extend_from_slice(&reader.take(client, size + 2)?);
    }
}

/// A growable buffer over the client socket with a read position.
struct BufReader {
    buf: Vec<u8>,
    pos: usize,
}

impl BufReader {
    fn new() -> Self {
        BufReader {
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn fill(&mut self, s: &mut TcpStream) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = s.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Exactly `n` bytes.
    fn take(&mut self, s: &mut TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() - self.pos < n {
            if self.fill(s)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "client closed mid-body",
                ));
            }
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    /// One line including its terminating LF.
    fn line(&mut self, s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let out = self.buf[self.pos..self.pos + i + 1].to_vec();
                self.pos += i + 1;
                return Ok(out);
            }
            if self.buf.len() - self.pos > MAX_HEAD {
                return Err(invalid("line too long"));
            }
            if self.fill(s)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "client closed mid-chunk",
                ));
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn header_name(line: &str) -> &str {
    line.split(':').next().unwrap_or_default().trim()
}

fn header_value(line: &str) -> &str {
    line.split_once(':')
        .map(|(_, v)| v.trim())
        .unwrap_or_default()
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}
