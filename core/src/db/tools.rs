//! The PostgreSQL client tools: [`PgTools`] finds and runs the real `pg_dump` and
//! `pg_restore` (from `PG_BIN_DIR` or `PATH`), and the helpers that describe how a tool ended.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, Command};

use crate::db::target::DbTarget;
use crate::error::Error;

/// Finds the PostgreSQL client tools: `$PG_BIN_DIR/<tool>` when set, otherwise `PATH`.
#[derive(Clone, Debug, Default)]
pub struct PgTools {
    pub bin_dir: Option<PathBuf>,
}

impl PgTools {
    pub fn from_env() -> Self {
        PgTools {
            bin_dir: std::env::var_os("PG_BIN_DIR").map(PathBuf::from),
        }
    }

    pub fn new(bin_dir: Option<&Path>) -> Self {
        PgTools {
            bin_dir: bin_dir.map(Path::to_path_buf),
        }
    }

    /// A command for `tool` with the target's libpq environment (when it connects anywhere) and
    /// no inherited PG* settings.
    pub fn command(&self, tool: &str, target: Option<&DbTarget>) -> Command {
        let program = match &self.bin_dir {
            Some(dir) => dir.join(tool),
            None => PathBuf::from(tool),
        };
        let mut cmd = Command::new(program);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") {
                cmd.env_remove(k);
            }
        }
        if let Some(target) = target {
            cmd.envs(target.libpq_env());
        }
        cmd.kill_on_drop(true);
        cmd
    }

    /// The major and full version of a tool, from `<tool> --version`.
    pub async fn version(&self, tool: &str) -> Result<(u32, String), Error> {
        let program = match &self.bin_dir {
            Some(dir) => dir.join(tool),
            None => PathBuf::from(tool),
        };
        let out = Command::new(&program)
            .arg("--version")
            .output()
            .await
            .map_err(|e| Error::ToolMissing {
                tool: tool.to_string(),
                reason: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        let version = text
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string();
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .ok_or_else(|| Error::ToolMissing {
                tool: tool.to_string(),
                reason: format!("unexpected version output {text:?}"),
            })?;
        Ok((major, version))
    }

    /// Spawns the command with piped stdio, mapping a failure to start to `ToolMissing`. The
    /// data pipes are widened to 1 MiB: with Linux's default 64 KiB, `pg_dump` and
    /// `pg_restore` spend measurably more CPU on wake-ups.
    pub fn spawn(&self, tool: &str, mut cmd: Command) -> Result<Child, Error> {
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::ToolMissing {
                tool: tool.to_string(),
                reason: e.to_string(),
            })?;
        if let Some(stdin) = &child.stdin {
            widen_pipe(stdin);
        }
        if let Some(stdout) = &child.stdout {
            widen_pipe(stdout);
        }
        Ok(child)
    }
}

/// A libpq connection string naming only a database, for tools' `--dbname`, so a name with
/// `=` or spaces cannot be misread.
pub fn conninfo_dbname(name: &str) -> String {
    format!(
        "dbname='{}'",
        name.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// Asks for a 1 MiB pipe buffer (the unprivileged maximum by default); a refusal only costs
/// speed, so it is ignored.
fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: F_SETPIPE_SZ on a pipe descriptor we own; fcntl reads no memory of ours.
    let _ = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
}

/// Collects the last 8 KiB of a tool's stderr, for error messages.
pub async fn stderr_tail(stderr: Option<ChildStderr>) -> String {
    let Some(mut stderr) = stderr else {
        return String::new();
    };
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 8192 {
                    tail.drain(..tail.len() - 8192);
                }
            }
        }
    }
    String::from_utf8_lossy(&tail).trim().to_string()
}

/// Describes how a tool ended, for error messages.
pub fn describe_exit(status: std::process::ExitStatus, stderr: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended abnormally".to_string(),
    };
    if stderr.is_empty() {
        how
    } else {
        format!("{how}: {stderr}")
    }
}
