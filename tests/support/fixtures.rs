//! What tests put into the bed: the sample shop schema and the destructive migration of the
//! examples, a big table that spans several upload parts, a stand-in HTTP server answering a
//! fixed status, temporary files, and stand-in PostgreSQL tools.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A schema with a sequence, a view, a function, an index, foreign keys and a few thousand rows.
pub const SHOP_SCHEMA: &str = include_str!("../../examples/shop.sql");

/// What a bad deploy does: drops a column, deletes rows, replaces a view, adds a table.
pub const DESTRUCTIVE_MIGRATION: &str = include_str!("../../examples/destructive-migration.sql");

/// A table of ~30 MB that does not compress much, so a dump spans several 8 MiB parts.
pub const BIG_TABLE: &str = "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS payload FROM generate_series(1, 300000) g;";

/// A temporary file path, the file removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(what: &str) -> TempFile {
        TempFile(std::env::temp_dir().join(format!(
            "backstop-{what}-{}-{}",
            std::process::id(),
            super::unique()
        )))
    }

    /// A temporary file holding `content`.
    pub fn with(what: &str, content: &str) -> TempFile {
        let f = TempFile::new(what);
        std::fs::write(&f.0, content).unwrap();
        f
    }

    pub fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A directory of stand-in PostgreSQL tools, removed on drop.
pub struct FakeTools(pub PathBuf);

impl FakeTools {
    /// A directory holding a `pg_dump` that pipes the real one (in `pg_bin`) into `shell_tail`,
    /// e.g. `head -c 9000000; kill -9 $$` (`--version` goes to the real one).
    pub fn pg_dump(pg_bin: &Path, shell_tail: &str) -> FakeTools {
        let dir = std::env::temp_dir().join(format!(
            "backstop-tools-{}-{}",
            std::process::id(),
            super::unique()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let real = pg_bin.join("pg_dump");
        let wrapper = dir.join("pg_dump");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\ncase \"$1\" in --version) exec '{real}' \"$@\";; esac\n'{real}' \"$@\" | {shell_tail}\n",
                real = real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeTools(dir)
    }

    /// A `pg_dump` that waits `seconds` before it runs the real one (in `pg_bin`), as a slow
    /// start on a busy host would.
    pub fn pg_dump_late(pg_bin: &Path, seconds: u32) -> FakeTools {
        let tools = FakeTools::pg_dump(pg_bin, "cat");
        let real = pg_bin.join("pg_dump");
        std::fs::write(
            tools.0.join("pg_dump"),
            format!(
                "#!/bin/sh\ncase \"$1\" in --version) exec '{real}' \"$@\";; esac\nsleep {seconds}\nexec '{real}' \"$@\"\n",
                real = real.display()
            ),
        )
        .unwrap();
        tools
    }
}

impl Drop for FakeTools {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tiny HTTP server on 127.0.0.1 (a free port) answering every request with `status` and a
/// short body; counts the requests; stopped (and its thread joined) on drop.
pub struct Answering {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Answering {
    pub fn start(status: &'static str) -> Answering {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let body = "release 1.5.0 is broken";
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Answering {
            addr,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
