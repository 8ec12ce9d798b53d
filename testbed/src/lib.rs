//! Backstop's local test bed: a moto server (AWS emulator) behind a proxy that holds every
//! request to AWS's documented limits, a throwaway PostgreSQL cluster and a fault-injecting
//! HTTP proxy, all bound to 127.0.0.1 and all torn down on drop. The API is synchronous (std
//! only) so any test, async or not, can use it.

mod error;
pub mod limits;
mod moto;
mod pg;
mod proxy;
mod util;

pub use error::TestbedError;
pub use limits::{Limits, Violation, WireRequest};
pub use moto::Moto;
pub use pg::PgCluster;
pub use proxy::{Fault, FaultProxy};
pub use util::{free_port, pid_alive, workspace_root};
