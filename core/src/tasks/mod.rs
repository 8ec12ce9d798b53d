//! What each Lambda does, one file per function, each a typed
//! `handle(&Context, Input) -> Result<Output, Error>`: the state machine's tasks
//! ([`start_backup`], [`poll_job`], [`restore`], [`verify`] with one file per mode), the
//! CodePipeline job worker ([`pipeline_action`]), and the event-driven and scheduled ones
//! ([`guard`], [`prune`], [`drill`]). Every failure is a named [`Error`] whose `error_type` the
//! state machine's Retry and Catch match.
//!
//! Each function's binary serves its own handler through [`serve_json`], which reads the
//! payload into the handler's input type (a payload that is not that type is `InvalidInput`,
//! which a Catch can see, rather than the runtime's own deserialization error). [`invoke`] is
//! the name → handler table over the same handlers that `backstop-local` and the tests serve.

pub mod drill;
pub mod guard;
pub mod pipeline_action;
pub mod poll_job;
pub mod prune;
pub mod restore;
pub mod start_backup;
pub mod verify;

use std::future::Future;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::Error;

/// The detail of an EventBridge `Scheduled Event`: empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleDetail {}

/// The event a schedule rule delivers to prune and drill.
pub type ScheduledEvent = EventBridgeEvent<ScheduleDetail>;

/// Checks the event is EventBridge's `Scheduled Event`.
pub fn check_scheduled(event: &ScheduledEvent) -> Result<(), Error> {
    if event.source != "aws.events" || event.detail_type != "Scheduled Event" {
        return Err(Error::InvalidInput(format!(
            "this function runs on a schedule: it takes \"Scheduled Event\" events from \
             aws.events, not {:?} from {:?}",
            event.detail_type, event.source
        )));
    }
    Ok(())
}

/// Runs a typed handler on a JSON payload as `function` (its AWS calls checked against its
/// row of the permissions table): the payload read into its input (`InvalidInput` naming the
/// function when it is not one), the output written back as JSON.
pub async fn serve_json<'c, I, O, F, Fut>(
    ctx: &'c Context,
    function: &str,
    payload: serde_json::Value,
    handle: F,
) -> Result<serde_json::Value, Error>
where
    I: DeserializeOwned,
    O: Serialize,
    F: FnOnce(&'c Context, I) -> Fut,
    Fut: Future<Output = Result<O, Error>>,
{
    let input: I = serde_json::from_value(payload)
        .map_err(|e| Error::InvalidInput(format!("{function} input: {e}")))?;
    // Each AWS call the handler makes is checked against this function's permissions.
    let output = crate::aws::permissions::as_function(function, handle(ctx, input)).await?;
    serde_json::to_value(output).map_err(|e| Error::InvalidInput(format!("{function} output: {e}")))
}

/// Every Lambda function, by name: the state machine's tasks, the pipeline worker, and the
/// scheduled and event-driven ones.
pub const FUNCTIONS: [&str; 8] = [
    "start-backup",
    "poll-job",
    "restore",
    "verify",
    "pipeline-action",
    "prune",
    "guard",
    "drill",
];

/// Runs function `name` on a JSON payload, as its Lambda does: what `backstop-local`'s invoke
/// router and the tests serve. A payload that is not the function's input is `InvalidInput`.
pub async fn invoke(
    ctx: &Context,
    name: &str,
    payload: serde_json::Value,
) -> Result<serde_json::Value, Error> {
    match name {
        "start-backup" => serve_json(ctx, name, payload, start_backup::handle).await,
        "poll-job" => serve_json(ctx, name, payload, poll_job::handle).await,
        "restore" => serve_json(ctx, name, payload, restore::handle).await,
        "verify" => serve_json(ctx, name, payload, verify::handle).await,
        "pipeline-action" => serve_json(ctx, name, payload, pipeline_action::handle).await,
        "prune" => serve_json(ctx, name, payload, prune::handle).await,
        "guard" => serve_json(ctx, name, payload, guard::handle).await,
        "drill" => serve_json(ctx, name, payload, drill::handle).await,
        other => Err(Error::InvalidInput(format!(
            "no function {other:?} (there are {})",
            FUNCTIONS.join(", ")
        ))),
    }
}
