//! The data Backstop reads and writes, as serde types with no I/O: the run document (the
//! input of one protected deploy), the manifest (the record of one backup), the jobs and
//! reports the state machine's tasks pass each other, poll policies and statuses, and
//! incident reports, and [`printable`], the form in which their text reaches a person. Everything
//! else builds on these.

pub mod incident;
pub mod job;
pub mod manifest;
pub mod poll;
pub mod run;

/// `text` with every control character written as `\u{..}`, so that a name or message from
/// any input cannot move a terminal's cursor or start a new line in a report.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\u{{{:x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}
