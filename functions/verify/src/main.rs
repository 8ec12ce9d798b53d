//! The verify Lambda: checks the run document, the backup, the deployment or the restore, and writes incident reports. The work is
//! `backstop_core::tasks::verify::handle`; this sets up tracing (honouring the function's log
//! format and level settings) and serves that handler.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    backstop_lambda::run("verify", backstop_core::tasks::verify::handle).await
}
