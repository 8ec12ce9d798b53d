//! `backstop-local` as the examples run it: started from a prepared command, its ready line
//! read, stopped on drop (SIGTERM, which stops its moto); the environment that points the CLI
//! and the AWS tools at it; and where the project's binaries are.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// The project's binary `name` (`backstop`, `backstop-local`), built into the same target
/// directory as the running example; an error naming `make_target` when it is not built.
pub fn project_binary(
    name: &str,
    make_target: &str,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join(name))
        .ok_or_else(|| format!("cannot locate the {name} binary"))?;
    if !path.exists() {
        return Err(format!("{} is not built (run `make {make_target}`)", path.display()).into());
    }
    Ok(path)
}

/// A running `backstop-local`.
pub struct LocalServer {
    child: Child,
    pub endpoint: String,
    pub state_machine_arn: String,
}

impl LocalServer {
    /// Spawns `cmd` (`backstop-local …` with its arguments and environment) and waits for the
    /// JSON line it prints once ready.
    pub fn start(cmd: &mut Command) -> Result<LocalServer, Box<dyn std::error::Error>> {
        let mut child = cmd
            .env_remove("BACKSTOP_LOG")
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take();
        let mut server = LocalServer {
            child,
            endpoint: String::new(),
            state_machine_arn: String::new(),
        };
        let mut line = String::new();
        BufReader::new(stdout.ok_or("no stdout")?).read_line(&mut line)?;
        let info: Value = serde_json::from_str(&line)
            .map_err(|e| format!("backstop-local printed {line:?}: {e}"))?;
        let text = |k: &str| info[k].as_str().unwrap_or_default().to_string();
        server.endpoint = text("endpoint");
        server.state_machine_arn = text("state_machine_arn");
        Ok(server)
    }

    /// Points `cmd` (the CLI, the AWS CLI) at this endpoint.
    pub fn aws_env(&self, cmd: &mut Command) {
        aws_env(cmd, &self.endpoint);
    }
}

/// Points `cmd` at `endpoint` with moto's placeholder credentials.
pub fn aws_env(cmd: &mut Command, endpoint: &str) {
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing");
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
