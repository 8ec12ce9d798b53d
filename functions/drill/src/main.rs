//! The drill Lambda: the restore drill schedule's target. It restores the latest good backup
//! of each application into a scratch database and unattached volumes, checks them against
//! the manifest, removes everything it created, and writes the drill report. The work is
//! `backstop_core::drill`; this only runs the loop.

// The runtime future nests the whole task stack; layout queries need the room.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    backstop_lambda::serve("drill").await
}
