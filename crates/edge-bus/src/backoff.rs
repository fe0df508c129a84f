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
