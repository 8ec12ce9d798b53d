//! Backstop core: everything the `backstop` CLI and the Lambda functions share.
//!
//! # Layout
//!
//! Each folder is one seam; dependencies point down this list only (a test,
//! `layout_dependencies_point_one_way`, keeps it so).
//!
//! - [`error`], [`progress`], [`deadline`]: the named errors every operation returns; how long
//!   operations report progress; the deadline long work stops before.
//! - [`model`]: the data, as serde types with no I/O: run document, manifest, jobs and
//!   reports, poll policy and status, incident reports.
//! - [`aws`]: the shared AWS configuration and its one retry layer, error codes, and the EC2,
//!   Step Functions, EventBridge and CloudWatch adapters.
//! - [`store`]: object storage: the port, its S3 and in-memory adapters, multipart upload and
//!   verified download of byte streams.
//! - [`catalog`]: backups in a store: where manifests and reports live, reading, listing and
//!   updating them.
//! - [`db`]: PostgreSQL: login and TLS, a SQL session, the real tools, and backup, restore and
//!   verify of a database.
//! - [`instance`]: EC2 instances: snapshot sets or images, and the resumable restore.
//! - [`checks`]: the deployment checks: HTTP, SQL, CloudWatch alarms, bake time.
//! - [`retention`]: what the retention policy keeps and prunes.
//! - [`context`]: the composition root: configuration from the environment and the clients.
//! - [`tasks`]: one file per Lambda, each a typed handler over the context.

pub mod deadline;
pub mod error;
pub mod progress;

pub mod model;

pub mod aws;

pub mod store;

pub mod catalog;

pub mod db;
pub mod instance;

pub mod checks;
pub mod retention;

pub mod context;

pub mod tasks;

#[cfg(test)]
mod layout;

pub use context::{Config, Context};
pub use error::Error;
