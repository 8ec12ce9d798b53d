//! The pipeline-action Lambda: CodePipeline's Lambda invoke action: starts and follows the protected deploy for a pipeline job. The work is
//! `backstop_core::tasks::pipeline_action::handle`; this sets up tracing (honouring the function's log
//! format and level settings) and serves that handler.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    backstop_lambda::run(
        "pipeline-action",
        backstop_core::tasks::pipeline_action::handle,
    )
    .await
}
