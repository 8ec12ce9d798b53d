//! A moto server (AWS emulator) child process on 127.0.0.1 at a free port, polled until
//! `GET /moto-api/` answers 200, and terminated (SIGTERM, then SIGKILL) on drop. Clients
//! reach it through a proxy that holds every request to AWS's documented limits
//! ([`crate::limits`]): moto accepts what AWS refuses, the proxy does not, and dropping a
//! `Moto` that saw a request AWS would refuse fails the test.

use crate::limits::Violation;
use crate::util::{free_port, log_tail, signal, unique_temp_dir, workspace_root};
use crate::{Fault, FaultProxy, TestbedError};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 3;

/// A moto server (AWS emulator) on 127.0.0.1 at a free port, killed by PID on drop.
#[derive(Debug)]
pub struct Moto {
    /// Where clients go: the limits proxy in front of the server.
    pub port: u16,
    /// "http://127.0.0.1:PORT" of the limits proxy.
    pub endpoint: String,
    /// The moto server itself, for what must bypass the limits (nothing a test sends).
    pub server_port: u16,
    limits: FaultProxy,
    child: Child,
    dir: PathBuf,
}

impl Moto {
    /// Starts `<workspace_root>/.venv/bin/moto_server` (or `$BACKSTOP_MOTO_SERVER`) and waits until it answers.
    pub fn start() -> Result<Moto, TestbedError> {
        Self::start_with_env(&[])
    }

    /// Like [`Moto::start`], with extra environment for the server, e.g. `MOTO_PORT` (where
    /// its Step Functions engine sends Lambda invocations).
    pub fn start_with_env(env: &[(&str, &str)]) -> Result<Moto, TestbedError> {
        let binary = match std::env::var_os("BACKSTOP_MOTO_SERVER") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => workspace_root().join(".venv/bin/moto_server"),
        };
        if !binary.exists() {
            return Err(TestbedError::Other(format!(
                "moto_server not found at {} (install the dev venv or set BACKSTOP_MOTO_SERVER)",
                binary.display()
            )));
        }
        let dir = unique_temp_dir("moto")?;
        let mut last_err = None;
        for attempt in 0..START_ATTEMPTS {
            match start_once(&binary, &dir, attempt, env) {
                Ok((server_port, mut child)) => {
                    let limits = match FaultProxy::start(server_port, Fault::None) {
                        Ok(p) => p,
                        Err(e) => {
                            terminate(&mut child);
                            let _ = std::fs::remove_dir_all(&dir);
                            return Err(e);
                        }
                    };
                    return Ok(Moto {
                        port: limits.port,
                        endpoint: limits.endpoint.clone(),
                        server_port,
                        limits,
                        child,
                        dir,
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_err.unwrap_or_else(|| TestbedError::Other("moto did not start".into())))
    }

    /// Every request so far that AWS would have refused (and every answer it could not give).
    pub fn violations(&self) -> Vec<Violation> {
        self.limits.violations()
    }

    /// The moto server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn start_once(
    binary: &std::path::Path,
    dir: &std::path::Path,
    attempt: usize,
    env: &[(&str, &str)],
) -> Result<(u16, Child), TestbedError> {
    let port = free_port()?;
    let log_path = dir.join(format!("moto-{attempt}.log"));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| TestbedError::io(format!("creating {}", log_path.display()), e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| TestbedError::io("duplicating the moto log handle", e))?;
    let mut child = Command::new(binary)
        .arg("-H")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| TestbedError::io(format!("spawning {}", binary.display()), e))?;

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(TestbedError::command(
                format!("moto_server on port {port}"),
                format!("exited early ({status}); log:\n{}", log_tail(&log_path, 30)),
            ));
        }
        if get_status(port, "/moto-api/") == Some(200) {
            return Ok((port, child));
        }
        if Instant::now() >= deadline {
            terminate(&mut child);
            return Err(TestbedError::Timeout {
                what: format!("waiting for moto_server on port {port}"),
                detail: format!("log:\n{}", log_tail(&log_path, 30)),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends a raw `GET path` to 127.0.0.1:port and returns the response status code, if any.
fn get_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    // The status line is all we need.
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// SIGTERM, a short grace, then SIGKILL; always reaps the child.
fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Moto {
    fn drop(&mut self) {
        terminate(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
        let violations = self.violations();
        if !violations.is_empty() && !std::thread::panicking() {
            let list: Vec<String> = violations.iter().map(|v| format!("- {v}")).collect();
            panic!(
                "{} request(s) to moto that AWS would refuse:\n{}",
                violations.len(),
                list.join("\n")
            );
        }
    }
}
