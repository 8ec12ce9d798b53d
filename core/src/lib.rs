//! Backstop core: everything the `backstop` CLI and the Lambda functions share.
//!
//! - [`error`]: the named errors every operation returns (their `error_type` is a stable name).
//! - [`dbconfig`]: where a database is and how to log in, from a URL or a Secrets Manager secret.
//! - [`pg`]: the PostgreSQL side: a SQL session (versions, row counts, create/rename/drop) and the
//!   `pg_dump`/`pg_restore` tools.
//! - [`pgtls`]: TLS for that SQL session, with libpq's `sslmode` meanings.
//! - [`s3`]: the narrow S3 port the catalog and the streams use.
//! - [`catalog`]: backup ids, the manifest format and where it lives in the bucket.
//! - [`upload`]: a byte stream into an S3 multipart upload with growing parts and SHA-256.
//! - [`download`]: an S3 object streamed out with ranged GETs, bounded prefetch and SHA-256.
//! - [`backup`], [`verify`], [`restore`]: the database backup, verify and restore operations.
//! - [`ec2`]: the EC2 port: throttling retries, named errors, instances and volumes, tags.
//! - [`instance_backup`], [`instance_restore`]: snapshot sets and images of instances, polled
//!   to completion; the resumable swap-volumes and replace-root restores.
//! - [`run`]: the run document, the input of one protected deploy.
//! - [`tasks`]: what each Lambda of the state machine does (start-backup, poll-job, restore,
//!   verify), over typed inputs and outputs.
//! - [`http`]: the HTTP(S) GET of the deployment checks.
//! - [`poll`]: job status and the backed-off, bounded wait between polls.
//! - [`progress`]: how long operations report bytes moved and what they wait on.
//! - [`alarms`]: the CloudWatch alarm checks.
//! - [`pipeline`]: the CodePipeline job worker (Lambda invoke action).
//! - [`guard`]: guard mode: a failed pipeline stage restores the backup taken for it.
//! - [`executions`]: starting Step Functions executions idempotently by name.
//! - [`incident`]: incident reports of failed deploys.
//! - [`notify`]: outcomes published on EventBridge.
//! - [`retention`]: what the retention policy keeps and prunes.
//! - [`drill`]: restore drills of the latest good backups into scratch.

pub mod alarms;
pub mod backup;
pub mod catalog;
pub mod dbconfig;
pub mod download;
pub mod drill;
pub mod ec2;
pub mod error;
pub mod executions;
pub mod guard;
pub mod http;
pub mod incident;
pub mod instance_backup;
pub mod instance_restore;
pub mod notify;
pub mod pg;
pub mod pgtls;
pub mod pipeline;
pub mod poll;
pub mod progress;
pub mod restore;
pub mod retention;
pub mod run;
pub mod s3;
pub mod tasks;
pub mod upload;
pub mod verify;

pub use error::Error;
