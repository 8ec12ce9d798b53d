//! Bounded, backed-off polling of long-running jobs (snapshot sets, images, restores): the
//! status a poll reports and the wait it suggests before the next one. The wait grows with
//! the time already spent (15 s, 15 s, 30 s, 60 s, … up to 5 min), so a caller that sleeps the
//! suggested time doubles its interval without keeping a counter, and a deadline bounds it all.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long to wait between polls and when to give up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PollPolicy {
    /// The shortest wait between polls, in seconds.
    pub first_wait_seconds: u64,
    /// The longest wait between polls, in seconds.
    pub max_wait_seconds: u64,
    /// Give up (TIMED_OUT) once this many seconds have passed since the job started.
    pub deadline_seconds: u64,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            first_wait_seconds: 15,
            max_wait_seconds: 300,
            deadline_seconds: 2 * 3600,
        }
    }
}

impl PollPolicy {
    /// The wait to suggest after `elapsed` since the job started: as long as the job has run
    /// so far, within [first, max], and never past the deadline.
    pub fn next_wait(&self, elapsed: Duration) -> Duration {
        let first = self.first_wait_seconds.max(1);
        let max = self.max_wait_seconds.max(first);
        let by_backoff = elapsed.as_secs().clamp(first, max);
        let to_deadline = self
            .deadline_seconds
            .saturating_sub(elapsed.as_secs())
            .max(1);
        Duration::from_secs(by_backoff.min(to_deadline))
    }

    /// True once the deadline has passed.
    pub fn expired(&self, elapsed: Duration) -> bool {
        elapsed.as_secs() >= self.deadline_seconds
    }
}

/// What a poll of a job reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Still running: how far along, and how long to wait before polling again.
    Pending {
        progress: u8,
        next_wait_seconds: u64,
        detail: String,
    },
    /// Finished; the backup is usable.
    Completed,
    /// A snapshot went to `error` or the image to `failed`.
    Failed { reason: String },
    /// The policy's deadline passed before the job finished.
    TimedOut { waited_seconds: u64 },
}

impl JobStatus {
    pub fn name(&self) -> &'static str {
        match self {
            JobStatus::Pending { .. } => "PENDING",
            JobStatus::Completed => "COMPLETED",
            JobStatus::Failed { .. } => "FAILED",
            JobStatus::TimedOut { .. } => "TIMED_OUT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_15_seconds_to_a_5_minute_cap_within_the_deadline() {
        let p = PollPolicy::default();
        let mut t = 0;
        let mut waits = Vec::new();
        while waits.len() < 9 {
            let w = p.next_wait(Duration::from_secs(t)).as_secs();
            waits.push(w);
            t += w;
        }
        assert_eq!(waits, [15, 15, 30, 60, 120, 240, 300, 300, 300]);
        let short = PollPolicy {
            deadline_seconds: 100,
            ..p
        };
        assert_eq!(short.next_wait(Duration::from_secs(90)).as_secs(), 10);
        assert!(!short.expired(Duration::from_secs(99)));
        assert!(short.expired(Duration::from_secs(100)));
    }
}
