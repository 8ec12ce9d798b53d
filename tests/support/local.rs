//! `backstop-local` as a child process: started with the functions' environment and the
//! stand-in functions, read for where it serves (its first stdout line), invoked through its
//! Lambda Invoke router as the state machine invokes the functions, and stopped by its PID
//! (SIGTERM, which stops its moto; SIGKILL if it lingers).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `backstop-local`.
pub struct Local {
    child: Child,
    info: Value,
}

impl Local {
    pub(crate) fn start(
        pg_bin: Option<&Path>,
        bucket: &str,
        envs: &[(String, String)],
        functions: &[(String, String)],
    ) -> Local {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backstop-local"));
        cmd.args(["--bucket", bucket])
            .env_remove("BACKSTOP_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for var in [
            "BACKSTOP_RETENTION_KEEP_LAST",
            "BACKSTOP_RETENTION_MAX_AGE_DAYS",
            "BACKSTOP_RETENTION_DRY_RUN",
            "BACKSTOP_DRILL_VOLUME_WAIT_SECONDS",
            "BACKSTOP_GUARD_STAGES",
            "BACKSTOP_STATE_MACHINE_ARN",
        ] {
            cmd.env_remove(var);
        }
        if let Some(dir) = pg_bin {
            cmd.env("PG_BIN_DIR", dir);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        for (name, command) in functions {
            cmd.arg("--function").arg(format!("{name}={command}"));
        }
        let mut child = cmd.spawn().expect("backstop-local starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let info: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("backstop-local printed {line:?}: {e}"));
        Local { child, info }
    }

    /// Its moto's endpoint (S3, EC2, Step Functions, …).
    pub fn endpoint(&self) -> String {
        self.info["endpoint"].as_str().unwrap().to_string()
    }

    /// The Lambda Invoke router serving the functions.
    pub fn router(&self) -> String {
        self.info["router"].as_str().unwrap().to_string()
    }

    pub fn state_machine_arn(&self) -> String {
        self.info["state_machine_arn"].as_str().unwrap().to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Invokes `backstop-<function>` through the router, as the state machine and EventBridge
    /// do (so it runs with the functions' environment); panics on a function error; its result.
    pub fn invoke(&self, function: &str, payload: &Value) -> Value {
        let (error, body) = self.invoke_raw(function, payload);
        assert!(error.is_none(), "{function} failed ({error:?}): {body}");
        body
    }

    /// Sends the router a request head (`head`, request line included, without the blank
    /// line) and `body`; its answer's status line.
    pub fn send_raw(&self, head: &str, body: &[u8]) -> String {
        let router = self.router();
        let addr = router.strip_prefix("http://").unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        // The router may answer and close before it has read everything.
        let _ = s.write_all(format!("{head}\r\n\r\n").as_bytes());
        let _ = s.write_all(body);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Invokes `backstop-<function>`: the function error type (when it failed) and the body.
    pub fn invoke_raw(&self, function: &str, payload: &Value) -> (Option<String>, Value) {
        let router = self.router();
        let addr = router.strip_prefix("http://").unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(900))).unwrap();
        let body = payload.to_string();
        write!(
            s,
            "POST /2015-03-31/functions/backstop-{function}/invocations HTTP/1.1\r\n\
             Host: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        let text = String::from_utf8_lossy(&answer).to_string();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{function}: no HTTP answer: {text}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{function}: {head}");
        let error = head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("x-amz-function-error:"))
            .then(|| {
                serde_json::from_str::<Value>(body).unwrap()["errorType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            });
        let value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{function} answered {body:?}: {e}"));
        (error, value)
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
