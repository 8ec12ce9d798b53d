//! The restore Lambda: puts one target back to the backup (a database by swap, instances by swapping volumes or replacing the root). The work is `backstop_core::tasks`; this only runs the loop.

// The runtime future nests the whole task stack; layout queries need the room.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    backstop_lambda::serve("restore").await
}
