//! A reader that keeps to a byte rate: the per-site bandwidth budget.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Reads from `inner` at most `rate` bytes per second on average (0: no limit), counting the
/// bytes read.
pub struct Throttled<R> {
    inner: R,
    rate: u64,
    started: Instant,
    pub bytes: u64,
    wait: Option<Pin<Box<Sleep>>>,
}

impl<R> Throttled<R> {
    pub fn new(inner: R, rate: u64) -> Self {
        Self { inner, rate, started: Instant::now(), bytes: 0, wait: None }
    }

    /// When the bytes read so far may have been read at the rate.
    fn due(&self) -> Option<Instant> {
        if self.rate == 0 {
            return None;
        }
        let at = self.started + Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        (at > Instant::now()).then_some(at)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Throttled<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if let Some(wait) = self.wait.as_mut() {
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.wait = None;
            }
            match self.due() {
                Some(at) => self.wait = Some(Box::pin(tokio::time::sleep_until(at))),
                None => break,
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            self.bytes += (buf.filled().len() - before) as u64;
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn keeps_to_the_rate() {
        let data = vec![7u8; 64 * 1024];
        let mut r = Throttled::new(&data[..], 16 * 1024);
        let start = Instant::now();
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        // The last read is allowed as soon as the earlier ones were paid for.
        assert!(start.elapsed() >= Duration::from_secs(1), "{:?}", start.elapsed());
        assert_eq!(r.bytes, data.len() as u64);
    }
}
