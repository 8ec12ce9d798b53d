//! The test bed's error type: I/O failures, failed external commands and timeouts.

use std::fmt;

/// Everything that can go wrong while starting or driving a test-bed component.
#[derive(Debug)]
pub enum TestbedError {
    /// An I/O operation failed; `context` says which one.
    Io {
        context: String,
        source: std::io::Error,
    },
    /// An external command (initdb, pg_ctl, psql, ...) failed; `detail` holds its stderr or a log tail.
    Command { what: String, detail: String },
    /// A component did not become ready in time; `detail` holds a log tail.
    Timeout { what: String, detail: String },
    /// Anything else (bad configuration, missing binary, ...).
    Other(String),
}

impl TestbedError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TestbedError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn command(what: impl Into<String>, detail: impl Into<String>) -> Self {
        TestbedError::Command {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for TestbedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestbedError::Io { context, source } => write!(f, "{context}: {source}"),
            TestbedError::Command { what, detail } => write!(f, "{what} failed: {detail}"),
            TestbedError::Timeout { what, detail } => write!(f, "timed out {what}: {detail}"),
            TestbedError::Other(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for TestbedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TestbedError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
