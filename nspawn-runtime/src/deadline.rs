//! Deadlines from user-given durations, which may be anything up to `Duration::MAX`.

use std::time::{Duration, Instant};

/// `now + d`, saturating: a duration too long for the clock means "a century", not a panic.
pub(crate) fn after(d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
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
