//! Bounded, backed-off polling of long-running jobs (snapshot sets, images, restores): the
//! status a poll reports and the wait it suggests before the next one. The wait grows with
//! the time already spent (15 s, 15 s, 30 s, 60 s, … up to 5 min), so a caller that sleeps the
//! suggested time doubles its interval without keeping a counter, and a deadline bounds it all.
//! A job that reports progress may wait longer: as long as it still needs at its rate so far.

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

    /// The wait to suggest for a job that reports `progress` (percent) after `elapsed`: the
    /// backoff wait, lengthened to the time the job still needs at its average rate so far
    /// (elapsed × (100 − progress) / progress) when that is longer; within [first, max] and
    /// never past the deadline. A job far from done is thus polled at the longest wait at once,
    /// and a job never more often than by backoff alone; with no progress yet (0) it is the
    /// backoff wait.
    pub fn next_wait_at(&self, elapsed: Duration, progress: u8) -> Duration {
        let backoff = self.next_wait(elapsed);
        if progress == 0 || progress >= 100 {
            return backoff;
        }
        let p = u64::from(progress);
        let eta = elapsed.as_secs().saturating_mul(100 - p) / p;
        let max = self.max_wait_seconds.max(self.first_wait_seconds.max(1));
        let to_deadline = self
            .deadline_seconds
            .saturating_sub(elapsed.as_secs())
            .max(1);
        backoff.max(Duration::from_secs(eta.min(max).min(to_deadline)))
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

    #[test]
    fn progress_lengthens_the_wait_to_the_estimated_time_left_never_shortens_it() {
        let p = PollPolicy::default();
        let at = |t: u64, progress: u8| p.next_wait_at(Duration::from_secs(t), progress).as_secs();
        // No progress yet: the backoff wait.
        assert_eq!(at(15, 0), 15);
        // 1% after 30 s: 49.5 min to go, so the longest wait at once.
        assert_eq!(at(30, 1), 300);
        // 15% after 5 s: 28 s to go, longer than the 15 s backoff.
        assert_eq!(at(5, 15), 28);
        // 90% after 60 s: 6 s to go, but never more often than by backoff.
        assert_eq!(at(60, 90), 60);
        // Never past the deadline.
        let short = PollPolicy {
            deadline_seconds: 100,
            ..p
        };
        assert_eq!(
            short.next_wait_at(Duration::from_secs(40), 10).as_secs(),
            60
        );
        // A 30-minute snapshot reporting linear progress in whole percent, as EBS does: 8 polls
        // where the backoff alone makes 11 and a fixed 15 s poll 121.
        let polls = |wait: &dyn Fn(u64, u8) -> u64| {
            let (mut t, mut n) = (0, 0);
            while t < 1800 {
                t += wait(t, (t * 100 / 1800) as u8);
                n += 1;
            }
            n
        };
        assert_eq!(polls(&|t, pr| at(t, pr)), 8);
        assert_eq!(
            polls(&|t, _| p.next_wait(Duration::from_secs(t)).as_secs()),
            11
        );
        assert_eq!(polls(&|_, _| 15), 120);
    }
}
