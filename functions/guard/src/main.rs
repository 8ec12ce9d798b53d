//! The guard Lambda: the target of the rules for failed CodePipeline stages (restores the
//! backup taken for that pipeline execution) and for protect executions that ended after their
//! deploy began without restoring (restores their backup). The work is
//! `backstop_core::tasks::guard::handle`; this sets up tracing (honouring the function's log
//! format and level settings) and serves that handler.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    backstop_lambda::run("guard", backstop_core::tasks::guard::handle).await
}
