//! Deadlines from user-given durations, which may be anything up to `Duration::MAX`, and the
//! `poll(2)` timeouts that end at them.

use std::time::{Duration, Instant};

use nix::poll::PollTimeout;

/// `now + d`, saturating: a duration too long for the clock means "a century", not a panic.
pub(crate) fn after(d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

/// The `poll(2)` timeout that ends at `deadline` (none: forever); `None` once it has passed.
pub(crate) fn poll_timeout(deadline: Option<Instant>) -> Option<PollTimeout> {
    let Some(deadline) = deadline else {
        return Some(PollTimeout::NONE);
    };
    let left = deadline.checked_duration_since(Instant::now())?;
    if left.is_zero() {
        return None;
    }
    Some(PollTimeout::try_from(left.as_millis().max(1)).unwrap_or(PollTimeout::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_saturate() {
        assert!(after(Duration::MAX) > Instant::now() + Duration::from_secs(3600));
        let soon = after(Duration::from_millis(5));
        assert!(soon <= Instant::now() + Duration::from_millis(5));
    }
}
