//! The guard Lambda: the target of the EventBridge rule for failed CodePipeline stages. When a
//! guarded stage (`BACKSTOP_GUARD_STAGES`) fails, it starts the protect state machine's restore
//! path, once, for the backup taken for that pipeline execution. The work is
//! `backstop_core::guard`; this only runs the loop.

// The runtime future nests the whole task stack; layout queries need the room.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    backstop_lambda::serve("guard").await
}
