//! The start-backup Lambda: backs up one target of the run (a database dump into S3, or an instance's snapshot set or image). The work is `backstop_core::tasks`; this only runs the loop.

// The runtime future nests the whole task stack; layout queries need the room.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    backstop_lambda::serve("start-backup").await
}
