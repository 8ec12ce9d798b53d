//! Small helpers shared by the test-bed components: free ports, the workspace root,
//! unique temp dirs, random passwords, process liveness and signalling, log tails.

use crate::TestbedError;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bind to port 0, read the port, drop the listener).
pub fn free_port() -> Result<u16, TestbedError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| TestbedError::io("binding 127.0.0.1:0", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| TestbedError::io("reading the bound address", e))?;
    Ok(addr.port())
}

/// The workspace root (parent of testbed/).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest_dir.to_path_buf())
}

/// Whether a process with this PID exists and is not a zombie (Linux: via /proc).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Format: "PID (comm) STATE ..."; comm may contain spaces and parens, so split at the last ')'.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// Sends `sig` to `pid`; errors (e.g. no such process) are ignored.
pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        if pid > 0 {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

/// Polls `pid_alive` until the process is gone or `timeout` passes; returns whether it is gone.
pub(crate) fn wait_pid_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pid_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `n` random ASCII alphanumerics drawn from /dev/urandom.
pub(crate) fn random_alnum(n: usize) -> Result<String, TestbedError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut f = std::fs::File::open("/dev/urandom")
        .map_err(|e| TestbedError::io("opening /dev/urandom", e))?;
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        f.read_exact(&mut buf)
            .map_err(|e| TestbedError::io("reading /dev/urandom", e))?;
        for b in buf {
            // 248 = 4 * 62: reject the top values to avoid modulo bias.
            if b < 248 && out.len() < n {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

/// Creates a fresh directory under the system temp dir, named `backstop-<prefix>-<pid>-<seq>-<random>`.
pub(crate) fn unique_temp_dir(prefix: &str) -> Result<PathBuf, TestbedError> {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let suffix = random_alnum(6)?;
    let dir = std::env::temp_dir().join(format!(
        "backstop-{prefix}-{}-{seq}-{suffix}",
        std::process::id()
    ));
    std::fs::create_dir(&dir)
        .map_err(|e| TestbedError::io(format!("creating {}", dir.display()), e))?;
    Ok(dir)
}

/// The last `max_lines` lines of a (log) file, or a note that it could not be read.
pub(crate) fn log_tail(path: &Path, max_lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(max_lines);
            lines[start..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}
