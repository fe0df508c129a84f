//! Exponential back-off with jitter, shared by every retry loop (call-home, start-up steps,
//! re-attaching stalled sources), so a fleet that fails at once does not retry at once.

use std::time::Duration;

/// Delays that double from `initial` up to `max`, each stretched by up to half at random.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, next: initial, max }
    }

    /// The delay to wait now; the following one is twice as long, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base + base.mul_f64(jitter_fraction() / 2.0)
    }

    /// Starts again from the initial delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// The delay before reconnection attempt `attempt` (1 is the first, at once): 10 ms doubling
/// up to [`RECONNECT_MAX`], stretched by up to half at random. async-nats's own stops at 4 s,
/// which after a hub outage of a few seconds left the central services away for up to 4 s more
/// (applies unanswered, sources not re-attached). Clients that hold connections are ours: the
/// central services (a handful, at the hub) and each host's site-manager (at its own site's
/// leaf server); a site's calls to the hub (renewal, join) connect for the call only.
pub fn reconnect_delay(attempt: usize) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempt - 2).unwrap_or(u32::MAX).min(16);
    let base = (Duration::from_millis(10) * 2u32.pow(exp)).min(RECONNECT_MAX);
    base + base.mul_f64(jitter_fraction() / 2.0)
}

/// Longest wait between two reconnection attempts (before jitter).
pub const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// A fraction in [0, 1) that differs between processes and calls.
fn jitter_fraction() -> f64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    f64::from((nanos ^ std::process::id()) % 1024) / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_at_once_then_backs_off_to_a_second() {
        assert_eq!(reconnect_delay(0), Duration::ZERO);
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        let d = reconnect_delay(2);
        assert!(d >= Duration::from_millis(10) && d < Duration::from_millis(15), "{d:?}");
        for attempt in [9, 10, 50, usize::MAX] {
            let d = reconnect_delay(attempt);
            assert!(d >= RECONNECT_MAX && d < RECONNECT_MAX.mul_f64(1.5), "{attempt}: {d:?}");
        }
    }

    #[test]
    fn doubles_up_to_the_maximum_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        for (d, base) in delays.iter().zip([1, 2, 4, 5, 5]) {
            let base = Duration::from_secs(base);
            assert!(*d >= base && *d <= base.mul_f64(1.5), "{d:?} for {base:?}");
        }
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(1500));
    }
}
