//! The verify Lambda: checks the run document, the backup, the deployment or the restore. The work is `backstop_core::tasks`; this only runs the loop.

// The runtime future nests the whole task stack; layout queries need the room.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    backstop_lambda::serve("verify").await
}
