//! The drill Lambda: the drill schedule's target: restores the latest good backups into scratch and checks them. The work is
//! `backstop_core::tasks::drill::handle`; this sets up tracing (honouring the function's log
//! format and level settings) and serves that handler.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    backstop_lambda::run("drill", backstop_core::tasks::drill::handle).await
}
