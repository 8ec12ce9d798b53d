//! What every Backstop Lambda shares: JSON logs, the task context from the environment
//! (`BACKSTOP_BUCKET`, `BACKSTOP_PREFIX`, the AWS configuration, `PG_BIN_DIR`), and one
//! runtime loop that hands each event to the core's task function. A failure reaches Step
//! Functions as a `Diagnostic` whose `error_type` is the error's stable name, so the state
//! machine's Retry and Catch match it.

#![recursion_limit = "256"]

use std::sync::Arc;

use backstop_core::tasks::{invoke, Context};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};

/// A core error on its way out of the function.
#[derive(Debug)]
pub struct Failure(pub backstop_core::Error);

impl From<Failure> for Diagnostic {
    fn from(f: Failure) -> Diagnostic {
        Diagnostic {
            error_type: f.0.error_type().to_string(),
            error_message: f.0.to_string(),
        }
    }
}

/// Runs the Lambda runtime loop for `function` (`start-backup`, `poll-job`, `restore`, `verify`).
pub async fn serve(function: &'static str) -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BACKSTOP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .without_time()
        .init();
    let ctx = Arc::new(Context::from_env().await.map_err(Box::new)?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let ctx = ctx.clone();
        async move {
            tracing::info!(function, request_id = %event.context.request_id, "invoked");
            invoke(&ctx, function, event.payload).await.map_err(|e| {
                tracing::error!(function, error_type = e.error_type(), error = %e, "failed");
                Failure(e)
            })
        }
    }))
    .await
}
