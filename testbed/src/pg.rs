//! A throwaway PostgreSQL cluster: initdb into a fresh temp dir, started with pg_ctl on
//! 127.0.0.1 at a free port with scram-sha-256 password auth, driven with psql over TCP,
//! and stopped (pg_ctl stop -m immediate, then SIGKILL) with its directory removed on drop.
//! When running as root, initdb/pg_ctl run as the `postgres` OS user through `runuser`.

use crate::util::{
    free_port, is_root, log_tail, pid_alive, random_alnum, signal, unique_temp_dir, wait_pid_gone,
};
use crate::TestbedError;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const ADMIN_USER: &str = "backstop_admin";
const OS_USER: &str = "postgres";
const START_ATTEMPTS: usize = 3;

/// A throwaway PostgreSQL cluster on 127.0.0.1, stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    pub port: u16,
    pub user: String,
    pub password: String,
    bin_dir: PathBuf,
    /// Temp dir holding `data/`, the server log and the unix socket.
    dir: PathBuf,
    /// Postmaster PID; 0 while not started.
    pid: u32,
    as_postgres: bool,
    /// Only TLS connections are accepted (like RDS with `rds.force_ssl`).
    tls_only: bool,
}

impl PgCluster {
    /// Runs initdb into a fresh temp dir and starts the server on a free port.
    pub fn start() -> Result<PgCluster, TestbedError> {
        Self::start_with(false)
    }

    /// Like [`PgCluster::start`], but the server only accepts TLS connections over TCP, with a
    /// self-signed certificate for 127.0.0.1 whose copy is at [`PgCluster::ca_cert`].
    pub fn start_tls_only() -> Result<PgCluster, TestbedError> {
        Self::start_with(true)
    }

    /// The certificate a TLS-only cluster presents (it is its own CA).
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.tls_only.then(|| self.dir.join("ca.crt"))
    }

    fn start_with(tls_only: bool) -> Result<PgCluster, TestbedError> {
        let bin_dir = find_bin_dir()?;
        let password = random_alnum(24)?;
        let dir = unique_temp_dir("pg")?;
        // From here on, dropping `cluster` cleans up whatever was created.
        let mut cluster = PgCluster {
            port: 0,
            user: ADMIN_USER.to_string(),
            password,
            bin_dir,
            dir,
            pid: 0,
            as_postgres: is_root(),
            tls_only,
        };
        cluster.initdb()?;
        if tls_only {
            cluster.require_tls()?;
        }
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            match cluster.start_server() {
                Ok(()) => return Ok(cluster),
                Err((retry, e)) => {
                    last_err = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| TestbedError::Other("PostgreSQL did not start".into())))
    }

    /// "postgres://USER:PASSWORD@127.0.0.1:PORT/DB"
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            self.user, self.password, self.port, db
        )
    }

    /// Runs `psql -X -A -t -q -v ON_ERROR_STOP=1 -d DB -c SQL` over TCP (password via
    /// PGPASSWORD); returns trimmed stdout, or Err with stderr on failure.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, TestbedError> {
        let mut cmd = self.psql_command(db);
        cmd.arg("-c").arg(sql).stdin(Stdio::null());
        let out = cmd
            .output()
            .map_err(|e| TestbedError::io("running psql", e))?;
        psql_result(out)
    }

    /// Like [`PgCluster::psql`] but feeds a whole script through psql's stdin (`-f -`).
    pub fn psql_script(&self, db: &str, script: &str) -> Result<String, TestbedError> {
        let mut cmd = self.psql_command(db);
        cmd.arg("-f")
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| TestbedError::io("spawning psql", e))?;
        // Write stdin from a thread so a large script cannot deadlock against full output pipes.
        let writer = child.stdin.take().map(|mut stdin| {
            let script = script.to_owned();
            std::thread::spawn(move || {
                // A write error (psql exited early) shows up in psql's status and stderr.
                let _ = stdin.write_all(script.as_bytes());
            })
        });
        let out = child
            .wait_with_output()
            .map_err(|e| TestbedError::io("waiting for psql", e))?;
        if let Some(w) = writer {
            let _ = w.join();
        }
        psql_result(out)
    }

    /// `CREATE DATABASE "name"` (the name is quoted as an identifier).
    pub fn create_db(&self, name: &str) -> Result<(), TestbedError> {
        let ident = name.replace('"', "\"\"");
        self.psql("postgres", &format!("CREATE DATABASE \"{ident}\""))
            .map(|_| ())
    }

    /// Directory holding the PostgreSQL binaries in use (pg_dump, pg_restore, psql ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn psql_command(&self, db: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        cmd.args(["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(&self.user)
            .arg("-d")
            .arg(db);
        for var in [
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGHOSTADDR",
            "PGOPTIONS",
            "PGSSLMODE",
            "PGPASSFILE",
            "PSQLRC",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// A command for a server-side binary (initdb, pg_ctl), run as `postgres` when we are root.
    fn server_command(&self, program: &str) -> Command {
        let binary = self.bin_dir.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new(runuser());
            c.arg("-u").arg(OS_USER).arg("--").arg(binary);
            c
        } else {
            Command::new(binary)
        };
        // The postgres user may not be able to enter our working directory.
        cmd.current_dir(&self.dir).stdin(Stdio::null());
        for var in ["PGDATA", "PGPORT", "PGHOST", "PGUSER"] {
            cmd.env_remove(var);
        }
        cmd
    }

    fn initdb(&mut self) -> Result<(), TestbedError> {
        let pwfile = self.dir.join("pwfile");
        std::fs::write(&pwfile, format!("{}\n", self.password))
            .map_err(|e| TestbedError::io("writing the password file", e))?;
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| TestbedError::io("restricting the password file", e))?;
        if self.as_postgres {
            chown_to_postgres(&self.dir)?;
        }
        let out = self
            .server_command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-U")
            .arg(&self.user)
            .arg("--auth=scram-sha-256")
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--locale=C", "--no-sync"])
            .output();
        let _ = std::fs::remove_file(&pwfile);
        let out = out.map_err(|e| TestbedError::io("running initdb", e))?;
        if !out.status.success() {
            return Err(TestbedError::command(
                "initdb",
                format!(
                    "{}\n{}",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(())
    }

    /// A test CA, a server certificate for 127.0.0.1 signed by it, and an hba that rejects
    /// plaintext TCP.
    fn require_tls(&mut self) -> Result<(), TestbedError> {
        let data = self.data_dir();
        let (crt, key) = (data.join("server.crt"), data.join("server.key"));
        let (ca_crt, ca_key) = (self.dir.join("ca.crt"), self.dir.join("ca.key"));
        let (csr, ext) = (self.dir.join("server.csr"), self.dir.join("server.ext"));
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| TestbedError::io("writing the certificate extensions", e))?;
        let openssl = |args: Vec<std::ffi::OsString>| -> Result<(), TestbedError> {
            let out = Command::new("openssl")
                .args(&args)
                .output()
                .map_err(|e| TestbedError::io("running openssl", e))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(TestbedError::command(
                    "openssl",
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ))
            }
        };
        let os = |parts: &[&dyn AsRef<std::ffi::OsStr>]| -> Vec<std::ffi::OsString> {
            parts.iter().map(|p| p.as_ref().to_os_string()).collect()
        };
        openssl(os(&[
            &"req",
            &"-x509",
            &"-newkey",
            &"rsa:2048",
            &"-nodes",
            &"-days",
            &"2",
            &"-subj",
            &"/CN=backstop test CA",
            &"-keyout",
            &ca_key,
            &"-out",
            &ca_crt,
        ]))?;
        openssl(os(&[
            &"req",
            &"-newkey",
            &"rsa:2048",
            &"-nodes",
            &"-subj",
            &"/CN=127.0.0.1",
            &"-keyout",
            &key,
            &"-out",
            &csr,
        ]))?;
        openssl(os(&[
            &"x509",
            &"-req",
            &"-in",
            &csr,
            &"-CA",
            &ca_crt,
            &"-CAkey",
            &ca_key,
            &"-CAcreateserial",
            &"-days",
            &"2",
            &"-extfile",
            &ext,
            &"-out",
            &crt,
        ]))?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| TestbedError::io("restricting the key", e))?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all scram-sha-256\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .map_err(|e| TestbedError::io("writing pg_hba.conf", e))?;
        if self.as_postgres {
            chown_to_postgres(&self.dir)?;
        }
        Ok(())
    }

    /// One start attempt on a fresh port; on error, says whether another port is worth a try.
    fn start_server(&mut self) -> Result<(), (bool, TestbedError)> {
        let port = free_port().map_err(|e| (false, e))?;
        let log = self.log_path();
        let log_len_before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='{}' \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50",
            self.dir.display()
        );
        if self.tls_only {
            opts.push_str(" -c ssl=on");
        }
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(opts)
            .args(["-w", "-t", "60", "start"])
            .output()
            .map_err(|e| (false, TestbedError::io("running pg_ctl start", e)))?;
        if !out.status.success() {
            let tail = log_tail(&log, 30);
            let new_log = std::fs::read(&log)
                .ok()
                .and_then(|b| {
                    b.get(usize::try_from(log_len_before).ok()?..)
                        .map(<[u8]>::to_vec)
                })
                .unwrap_or_default();
            let new_log = String::from_utf8_lossy(&new_log);
            let port_taken = new_log.contains("could not bind")
                || new_log.contains("Address already in use")
                || new_log.contains("could not create any TCP/IP sockets");
            // pg_ctl may have left a half-started postmaster behind.
            self.kill_postmaster();
            return Err((
                port_taken,
                TestbedError::command(
                    format!("pg_ctl start on port {port}"),
                    format!(
                        "{}\nserver log:\n{tail}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                ),
            ));
        }
        self.port = port;
        self.pid = read_postmaster_pid(&self.data_dir()).map_err(|e| (false, e))?;
        Ok(())
    }

    fn kill_postmaster(&mut self) {
        if let Ok(pid) = read_postmaster_pid(&self.data_dir()) {
            signal(pid, libc::SIGKILL);
            wait_pid_gone(pid, Duration::from_secs(5));
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.pid != 0 {
            let _ = self
                .server_command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if pid_alive(self.pid) {
                signal(self.pid, libc::SIGKILL);
            }
            wait_pid_gone(self.pid, Duration::from_secs(10));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn psql_result(out: Output) -> Result<String, TestbedError> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(TestbedError::command(
            format!("psql ({})", out.status),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

fn read_postmaster_pid(data: &Path) -> Result<u32, TestbedError> {
    let path = data.join("postmaster.pid");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| TestbedError::io(format!("reading {}", path.display()), e))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| TestbedError::Other(format!("no PID in {}", path.display())))
}

fn chown_to_postgres(path: &Path) -> Result<(), TestbedError> {
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{OS_USER}:"))
        .arg(path)
        .output()
        .map_err(|e| TestbedError::io("running chown", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestbedError::command(
            format!("chown {OS_USER}: {}", path.display()),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

fn runuser() -> PathBuf {
    ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("runuser"))
}

/// `$PG_BIN_DIR`, else the highest-numbered `/usr/lib/postgresql/*/bin`.
fn find_bin_dir() -> Result<PathBuf, TestbedError> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if dir.join("pg_ctl").exists() {
            return Ok(dir);
        }
        return Err(TestbedError::Other(format!(
            "PG_BIN_DIR={} has no pg_ctl",
            dir.display()
        )));
    }
    let root = Path::new("/usr/lib/postgresql");
    let entries = std::fs::read_dir(root).map_err(|e| {
        TestbedError::io(
            format!("listing {} (is PostgreSQL installed?)", root.display()),
            e,
        )
    })?;
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(version) = name
            .split('.')
            .map(str::parse::<u32>)
            .collect::<Result<Vec<u32>, _>>()
        else {
            continue;
        };
        let bin = entry.path().join("bin");
        if !bin.join("pg_ctl").exists() {
            continue;
        }
        if best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        TestbedError::Other(format!(
            "no PostgreSQL found under {} (set PG_BIN_DIR)",
            root.display()
        ))
    })
}
