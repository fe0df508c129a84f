//! A TCP relay that stands for a site's WAN link: the leaf dials the relay, the relay dials the
//! hub, and the test cuts and restores the link (closing live connections and refusing new ones)
//! or makes it flap.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A controllable link; dropped, it stops relaying.
pub struct Relay {
    addr: SocketAddr,
    up: Arc<watch::Sender<bool>>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Relays connections on a random loopback port to `target` (host:port).
    pub async fn start(target: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, _) = watch::channel(true);
        let up = Arc::new(tx);
        let target = target.to_string();
        let up2 = up.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                if !*up2.borrow() {
                    drop(inbound); // link is down: the peer sees the connection closed
                    continue;
                }
                let mut down = up2.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else { return };
                    let (mut a, mut b) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Self { addr, up, accept })
    }

    /// `host:port` to dial instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts the link: live connections close, new ones are refused until [`Relay::restore`].
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }

    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Flaps the link: down for `down`, up for `up`, `times` times, then leaves it up.
    pub async fn flap(&self, times: usize, down: Duration, up: Duration) {
        for _ in 0..times {
            self.cut();
            tokio::time::sleep(down).await;
            self.restore();
            tokio::time::sleep(up).await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
