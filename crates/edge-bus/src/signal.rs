//! A change signal that many loops can wait on without missing a change: each raise marks
//! every subscriber's receiver as changed, however busy it was when the raise happened.

use std::sync::Arc;

use tokio::sync::watch;

/// Raised by whatever changes shared state; loops that act on it each hold a [`Waiter`].
#[derive(Clone)]
pub struct Signal(Arc<[Arc<watch::Sender<u64>>]>);

/// One loop's view of a [`Signal`].
pub struct Waiter(watch::Receiver<u64>);

impl Signal {
    pub fn new() -> Self {
        Self(Arc::new([Arc::new(watch::channel(0).0)]))
    }

    /// A signal whose raise raises both `self` and `other` (its waiters wait on `self`).
    pub fn with(&self, other: &Signal) -> Self {
        Self(self.0.iter().chain(other.0.iter()).cloned().collect())
    }

    /// Marks a change for every waiter.
    pub fn raise(&self) {
        for s in self.0.iter() {
            s.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    pub fn waiter(&self) -> Waiter {
        Waiter(self.0[0].subscribe())
    }
}

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

impl Waiter {
    /// Returns once a change was raised since the last call (at once if one is pending).
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await; // the signal is gone: nothing will change again
        }
    }
}
