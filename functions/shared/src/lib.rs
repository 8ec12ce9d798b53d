//! What every Backstop Lambda shares: the context read once from the environment (the
//! bucket, prefix and other settings, the standard AWS configuration, `PG_BIN_DIR`), and one
//! runtime loop that reads each event into the function's typed input and hands it to the
//! function's handler within the invocation's deadline. A payload that is not that input is
//! `InvalidInput`; every failure reaches Step Functions as a `Diagnostic` whose `error_type` is
//! the error's stable name (its message bounded), so the state machine's Retry and Catch match
//! it.

use std::future::Future;

use backstop_core::model::job::bounded_for_json;
use backstop_core::tasks::serve_json;
use backstop_core::{Context, Error};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A core error on its way out of the function.
#[derive(Debug)]
pub struct Failure(pub Error);

/// The most characters an error message takes as JSON: Step Functions hands a failed
/// function's `{"errorType", "errorMessage"}` on as the cause a Catch passes to the next state
/// (the restore path keeps one per target) and a Fail state ends the execution with; a cause
/// is at most 32,768 characters (`backstop_core::model::job::MAX_CAUSE`), and a state's payload
/// at most 256 KiB with up to `MAX_TARGETS` of them.
pub const MAX_ERROR_MESSAGE: usize = 4_096;

impl From<Failure> for Diagnostic {
    fn from(f: Failure) -> Diagnostic {
        Diagnostic {
            error_type: f.0.error_type().to_string(),
            error_message: bounded_for_json(&f.0.to_string(), MAX_ERROR_MESSAGE),
        }
    }
}

/// Runs the Lambda runtime loop of `function` over its typed `handler`. The context is built
/// once and lives as long as the process, as the runtime keeps the process warm between
/// invocations.
pub async fn run<I, O, F, Fut>(
    function: &'static str,
    handler: F,
) -> Result<(), lambda_runtime::Error>
where
    I: DeserializeOwned,
    O: Serialize,
    F: Fn(&'static Context, I) -> Fut + Copy,
    Fut: Future<Output = Result<O, Error>>,
{
    let ctx: &'static Context = Box::leak(Box::new(Context::from_env().await.map_err(Box::new)?));
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            tracing::info!(function, request_id = %event.context.request_id, "invoked");
            // The invocation's deadline, which long steps stop before (backstop_core::deadline).
            let deadline = backstop_core::deadline::from_epoch_millis(event.context.deadline);
            // Boxed, so the runtime's future holds a pointer to the handler's deep future rather
            // than nesting its whole layout (which would need a raised recursion limit).
            let work = Box::pin(serve_json(ctx, function, event.payload, handler));
            backstop_core::deadline::within(deadline, work)
                .await
                .map_err(|e| {
                    tracing::error!(function, error_type = e.error_type(), error = %e, "failed");
                    Failure(e)
                })
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_of_any_length_leaves_the_function_as_a_bounded_message() {
        let e = Error::InvalidInput("\"".repeat(100_000));
        let d = Diagnostic::from(Failure(e));
        assert_eq!(d.error_type, "InvalidInput");
        let as_json = serde_json::to_string(&d.error_message).unwrap();
        assert!(
            as_json.chars().count() <= MAX_ERROR_MESSAGE,
            "{}",
            as_json.len()
        );
        assert!(
            d.error_message.contains("cut from"),
            "{}",
            &d.error_message[..60]
        );
    }
}
