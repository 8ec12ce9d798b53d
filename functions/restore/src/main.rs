//! The restore Lambda: puts one target of the run back to the backup. The work is
//! `backstop_core::tasks::restore::handle`; this sets up tracing (honouring the function's log
//! format and level settings) and serves that handler.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    backstop_lambda::run("restore", backstop_core::tasks::restore::handle).await
}
