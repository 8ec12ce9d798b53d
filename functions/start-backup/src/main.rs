//! The start-backup Lambda: backs up one target of the run under the run's backup id. The work is
//! `backstop_core::tasks::start_backup::handle`; this sets up tracing (honouring the function's log
//! format and level settings) and serves that handler.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    backstop_lambda::run("start-backup", backstop_core::tasks::start_backup::handle).await
}
