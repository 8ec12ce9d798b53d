//! The poll-job Lambda: one look at a job the state machine's poll loop follows. The work is
//! `backstop_core::tasks::poll_job::handle`; this sets up tracing (honouring the function's log
//! format and level settings) and serves that handler.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    backstop_lambda::run("poll-job", backstop_core::tasks::poll_job::handle).await
}
