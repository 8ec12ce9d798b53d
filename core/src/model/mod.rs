//! The data Backstop reads and writes, as serde types with no I/O: the run document (the
//! input of one protected deploy), the manifest (the record of one backup), the jobs and
//! reports the state machine's tasks pass each other, poll policies and statuses, and
//! incident reports. Everything else builds on these.

pub mod incident;
pub mod job;
pub mod manifest;
pub mod poll;
pub mod run;
