//! The pipeline-action Lambda: CodePipeline's Lambda invoke action. It starts the protected deploy for a pipeline job (named from the job id), answers with a continuation token while the execution runs, then with its outcome. The work is `backstop_core::pipeline`; this only runs the loop.

// The runtime future nests the whole task stack; layout queries need the room.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    backstop_lambda::serve("pipeline-action").await
}
