//! The prune Lambda: the retention schedule's target. It keeps the newest good backups of each application and what running executions use, and deletes older backups, forensic dumps, replaced volumes and the databases restores and drills left behind (or, with `dry_run`, only reports the plan). The work is `backstop_core::retention`; this only runs the loop.

// The runtime future nests the whole task stack; layout queries need the room.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    backstop_lambda::serve("prune").await
}
