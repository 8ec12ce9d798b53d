//! The contracts between the code and what surrounds it, with no server: the state machine's
//! ASL against the Rust types and error names ([`asl`]), the sample events in `events/` and
//! the example pipeline against the functions' inputs ([`events`]), and every function's event
//! parser under arbitrary and mutated input ([`event_fuzz`]), and what the shipped binaries
//! link ([`binaries`]), and what the template gives each function ([`template`]).

#[path = "../support/mod.rs"]
mod support;

mod asl;
mod binaries;
mod event_fuzz;
mod events;
mod template;
