//! The workflow as it runs: the protected deploy end to end on the local state machine
//! (`backstop-local`: moto executing the real `statemachine/protect.asl.json`, the project's
//! functions served on its Lambda port) with a throwaway PostgreSQL and instances in moto
//! ([`protect`]), and the CodePipeline job worker that starts and follows it
//! ([`pipeline_action`]).

#[path = "../support/mod.rs"]
mod support;

mod pipeline_action;
mod protect;
