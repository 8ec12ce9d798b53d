//! Smoke tests for the test bed: moto starts and dies, a PostgreSQL cluster starts, answers
//! with password auth and is removed, and the fault proxy forwards and injects as configured.

use backstop_testbed::{free_port, pid_alive, workspace_root, Fault, FaultProxy, Moto, PgCluster};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Sends raw bytes to 127.0.0.1:port and reads the whole response until the server closes.
fn raw_request(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).expect("write request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read response");
    String::from_utf8_lossy(&out).into_owned()
}

fn get(port: u16, target: &str) -> String {
    raw_request(
        port,
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    )
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

#[test]
fn helpers() {
    let p = free_port().unwrap();
    assert!(p > 0);
    // The port is really free again.
    TcpListener::bind(("127.0.0.1", p)).unwrap();
    assert!(workspace_root().join("testbed/Cargo.toml").exists());
    assert!(pid_alive(std::process::id()));
    assert!(!pid_alive(u32::MAX - 1));
}

#[test]
fn moto_starts_answers_and_dies() {
    let moto = Moto::start().expect("moto starts");
    assert_eq!(moto.endpoint, format!("http://127.0.0.1:{}", moto.port));
    let resp = get(moto.port, "/moto-api/");
    assert_eq!(status_of(&resp), 200, "{resp}");
    let pid = moto.pid();
    assert!(pid_alive(pid));
    drop(moto);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "moto PID {pid} still exists"
    );
}

#[test]
fn pg_cluster_lifecycle() {
    let pg = PgCluster::start().expect("postgres starts");
    let pid = pg.pid();
    assert!(pid_alive(pid));
    assert_eq!(
        pg.url("app"),
        format!(
            "postgres://{}:{}@127.0.0.1:{}/app",
            pg.user, pg.password, pg.port
        )
    );
    assert!(pg.password.len() >= 24 && pg.password.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(pg.bin_dir().join("pg_dump").exists());

    pg.create_db("app").unwrap();
    assert_eq!(pg.psql("app", "select 41+1").unwrap(), "42");
    assert_eq!(pg.psql("app", "select current_database()").unwrap(), "app");

    let out = pg
        .psql_script(
            "app",
            "create table t(id int primary key, v text);\ninsert into t select g, 'x' || g from generate_series(1, 1000) g;\nselect count(*) from t;\n",
        )
        .unwrap();
    assert_eq!(out, "1000");

    let err = pg.psql("app", "select * from no_such_table").unwrap_err();
    assert!(err.to_string().contains("no_such_table"), "{err}");
    let err = pg
        .psql_script("app", "select 1;\nselect broken(;\nselect 2;\n")
        .unwrap_err();
    assert!(err.to_string().contains("syntax error"), "{err}");

    // Password auth is enforced over TCP.
    let wrong = Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-w", "-A", "-t", "-h", "127.0.0.1", "-p"])
        .arg(pg.port.to_string())
        .arg("-U")
        .arg(&pg.user)
        .args(["-d", "app", "-c", "select 1"])
        .env("PGPASSWORD", "definitely-wrong")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );

    // The data dir is the parent of postmaster.pid; find it via /proc to check removal later.
    let dir = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::read_to_string(p.join("data/postmaster.pid"))
                .map(|s| s.lines().next() == Some(pid.to_string().as_str()))
                .unwrap_or(false)
        })
        .expect("cluster dir under temp_dir");

    drop(pg);
    assert!(!pid_alive(pid), "postmaster {pid} still alive");
    assert!(!dir.exists(), "{} not removed", dir.display());
}

/// A tiny HTTP server: answers each request with `200` and a body naming the target and the
/// received body length, then closes. Records every request head it saw.
fn echo_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i;
                }
                let n = s.read(&mut chunk).unwrap();
                if n == 0 {
                    break usize::MAX;
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            if head_end == usize::MAX {
                continue;
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let lower = head.to_ascii_lowercase();
            let chunked = lower.contains("transfer-encoding: chunked");
            let len: usize = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            loop {
                let body = &buf[head_end + 4..];
                let done = if chunked {
                    body.windows(5).any(|w| w == b"\r\n0\r\n") && body.ends_with(b"\r\n\r\n")
                } else {
                    body.len() >= len
                };
                if done {
                    break;
                }
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "client closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body_len = buf.len() - head_end - 4;
            let target = head.split(' ').nth(1).unwrap_or("").to_string();
            seen2.lock().unwrap().push(head);
            let body = format!("echo {target} body={body_len}");
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).unwrap();
        }
    });
    (port, seen)
}

#[test]
fn fault_proxy_forwards_then_injects() {
    let (upstream, seen) = echo_server();
    let proxy = FaultProxy::start(
        upstream,
        Fault::FailAfter {
            matching: "partNumber=".into(),
            after: 1,
            status: 500,
        },
    )
    .unwrap();
    assert_eq!(proxy.endpoint, format!("http://127.0.0.1:{}", proxy.port));

    // First matching request (with a Content-Length body) is forwarded.
    let r1 = raw_request(
        proxy.port,
        b"PUT /bucket/key?partNumber=1&uploadId=u HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(status_of(&r1), 200, "{r1}");
    assert!(
        r1.ends_with("echo /bucket/key?partNumber=1&uploadId=u body=5"),
        "{r1}"
    );
    let lower = r1.to_ascii_lowercase();
    assert!(
        lower.contains("connection: close") && !lower.contains("keep-alive"),
        "{r1}"
    );
    assert_eq!(proxy.injected(), 0);

    // Second matching request gets the injected 500 without reaching upstream.
    let r2 = raw_request(
        proxy.port,
        b"PUT /bucket/key?partNumber=2&uploadId=u HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(status_of(&r2), 500, "{r2}");
    assert!(
        r2.contains("<Code>InternalError</Code><Message>injected</Message>"),
        "{r2}"
    );
    assert!(
        r2.to_ascii_lowercase()
            .contains("content-type: application/xml"),
        "{r2}"
    );
    assert_eq!(proxy.injected(), 1);

    // Non-matching requests are still forwarded, including chunked bodies.
    let r3 = get(proxy.port, "/bucket?uploads");
    assert_eq!(status_of(&r3), 200, "{r3}");
    assert!(r3.ends_with("echo /bucket?uploads body=0"), "{r3}");
    let chunked_body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n";
    let mut req =
        b"POST /bucket/obj HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(chunked_body);
    let r4 = raw_request(proxy.port, &req);
    assert_eq!(status_of(&r4), 200, "{r4}");
    assert!(
        r4.ends_with(&format!("echo /bucket/obj body={}", chunked_body.len())),
        "{r4}"
    );
    assert_eq!(proxy.injected(), 1);

    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert!(heads
        .iter()
        .all(|h| h.contains("Connection: close\r\n") || h.ends_with("Connection: close")));
    assert!(heads
        .iter()
        .all(|h| !h.to_ascii_lowercase().contains("keep-alive")));
    assert!(heads.iter().all(|h| !h.contains("partNumber=2")));

    // Dropping the proxy closes its listener.
    let port = proxy.port;
    drop(proxy);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn fault_proxy_in_front_of_moto() {
    let moto = Moto::start().expect("moto starts");
    let proxy = FaultProxy::start(moto.port, Fault::None).unwrap();
    let resp = get(proxy.port, "/moto-api/");
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(proxy.injected(), 0);
}
