//! The deadline of the work in progress: a Lambda invocation's (its context's deadline, set by
//! the function's runtime loop) or a CLI command's `--timeout`. Work that can run long reads
//! [`remaining`] and stops, leaving nothing half-done, before it: the checks hand the rest of
//! their bake to the next invocation rather than run past the function's timeout.

use std::future::Future;
use std::time::{Duration, Instant};

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `work` with `deadline` as its deadline.
pub async fn within<F: Future>(deadline: Instant, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}

/// The deadline `millis_since_epoch` (as the Lambda runtime gives it) as an instant.
pub fn from_epoch_millis(millis_since_epoch: u64) -> Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Instant::now() + Duration::from_millis(millis_since_epoch.saturating_sub(now_ms))
}

/// Time left before the deadline of the work this is called from; `None` when it has none.
pub fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|d| d.saturating_duration_since(Instant::now()))
        .ok()
}

/// `limit`, shortened to end `reserve` before the deadline of the work this is called from
/// (zero when that is already past); `None` when neither bounds it.
pub fn limit(limit: Option<Duration>, reserve: Duration) -> Option<Duration> {
    let by_deadline = remaining().map(|left| left.saturating_sub(reserve));
    match (limit, by_deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_sees_its_own_deadline_and_work_without_one_none() {
        assert_eq!(remaining(), None);
        let left = within(Instant::now() + Duration::from_secs(60), async {
            remaining()
        })
        .await
        .unwrap();
        assert!(left > Duration::from_secs(55) && left <= Duration::from_secs(60));
        let past = within(Instant::now(), async { remaining() }).await;
        assert_eq!(past, Some(Duration::ZERO));
    }

    #[tokio::test]
    async fn a_limit_ends_its_reserve_before_the_deadline() {
        let minute = Duration::from_secs(60);
        assert_eq!(limit(None, minute), None);
        assert_eq!(limit(Some(minute), minute), Some(minute));
        let near = within(Instant::now() + Duration::from_secs(90), async {
            (
                limit(Some(Duration::from_secs(600)), minute),
                limit(None, Duration::from_secs(120)),
            )
        })
        .await;
        assert!(near.0.unwrap() <= Duration::from_secs(30), "{near:?}");
        assert_eq!(near.1, Some(Duration::ZERO));
    }

    #[test]
    fn an_epoch_deadline_in_the_past_is_now() {
        let at = from_epoch_millis(0);
        assert!(at <= Instant::now());
    }
}
