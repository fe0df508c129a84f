//! Designed shutdown: the first SIGTERM or SIGINT cancels the token (services stop intake,
//! drain and return); a second one exits at once.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM/SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_signal().await;
        tracing::info!("shutdown requested; draining (signal again to force)");
        t.cancel();
        wait_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Longest a drain step may take at shutdown; with the server gone, a flush would wait forever.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs a drain step, giving up after [`DRAIN_TIMEOUT`].
pub async fn bounded<F: std::future::Future>(what: &str, step: F) -> Option<F::Output> {
    match tokio::time::timeout(DRAIN_TIMEOUT, step).await {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::warn!("{what} did not finish within {DRAIN_TIMEOUT:?} at shutdown; going on");
            None
        }
    }
}
