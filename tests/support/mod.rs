//! The one test bed every integration test binary shares (each includes it with
//! `#[path = "../support/mod.rs"] mod support;`):
//!
//! - [`Bed`]: the servers a test needs, from one builder (`Bed::new().postgres().moto()…
//!   .build()`): a throwaway PostgreSQL cluster, moto, `backstop-local` as the local state
//!   machine, the fault proxy; every one on 127.0.0.1 at a free port and stopped by its PID
//!   when the bed is dropped. AWS clients and the task `Context` on the bed's endpoint come
//!   from it, and so do the helpers that look at S3, Step Functions and the tables directly.
//! - [`Cli`]: `backstop` runs against the bed, with helpers for the calls tests repeat.
//! - [`offline`]: AWS and contexts with no server at all: a closed port, a recording fake, an
//!   in-memory catalog; the sample events.
//! - [`fixtures`]: schemas, migrations, a stand-in HTTP server, temporary files and tools.
//! - [`limits_checked`]: AWS's documented limits on every client a test builds; moto gets
//!   them from the proxy the test bed puts in front of it.

// Each test binary uses part of the bed.
#![allow(dead_code, unused_imports)]

mod bed;
mod cli;
pub mod fixtures;
mod limits;
mod local;
pub mod offline;

pub use bed::{table_checksums, tags_of, Bed, BedBuilder};
pub use cli::{Cli, Run};
pub use fixtures::{Answering, FakeTools, TempFile, BIG_TABLE, DESTRUCTIVE_MIGRATION, SHOP_SCHEMA};
pub use limits::limits_checked;
pub use local::Local;
pub use offline::{
    closed_port_context, closed_port_shared, guarded, memory_catalog, memory_context, sample_event,
    FakeAws,
};

/// The region and credentials every client and process of the bed uses.
pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";

/// The account moto (and `backstop-local`) use.
pub const ACCOUNT: &str = "123456789012";

/// The catalog prefix the tests use (the default).
pub const PREFIX: &str = "backstop";

/// A unique enough suffix for temporary names.
pub fn unique() -> u128 {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u128;
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        * 1000
        + seq
}

/// The workspace root (where `events/`, `examples/` and `statemachine/` are).
pub fn root() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}
