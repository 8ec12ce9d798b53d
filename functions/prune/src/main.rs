//! The prune Lambda: the retention schedule's target: prunes what the retention policy no longer keeps. The work is
//! `backstop_core::tasks::prune::handle`; this sets up tracing (honouring the function's log
//! format and level settings) and serves that handler.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    backstop_lambda::run("prune", backstop_core::tasks::prune::handle).await
}
