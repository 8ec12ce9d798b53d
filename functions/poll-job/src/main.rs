//! The poll-job Lambda: reports where a backup or restore job stands and how long to wait before the next poll. The work is `backstop_core::tasks`; this only runs the loop.

// The runtime future nests the whole task stack; layout queries need the room.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    backstop_lambda::serve("poll-job").await
}
