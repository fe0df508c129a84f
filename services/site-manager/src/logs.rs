//! Logs on demand: this host answers `edge.v1.logs.<site>` with its own containers' lines, so
//! logs stay at the site until someone asks. Every host of the site answers (no queue group),
//! each ending with a `done` chunk. A follow streams new lines until its session is no longer
//! renewed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_types::logs::{LogChunk, LogRequest};
use edge_types::schema::decode;
use edge_types::{subject, Name};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::reconcile::Observed;
use crate::runtime::DockerRuntime;

/// Lines per chunk.
const CHUNK_LINES: usize = 500;
/// A follow ends this long after the last renewal.
const FOLLOW_LEASE: Duration = Duration::from_secs(30);
/// Longest line sent; longer ones are cut.
const MAX_LINE: usize = 16 * 1024;

pub struct LogServer {
    pub client: async_nats::Client,
    pub site: Name,
    pub host: Name,
    pub runtime: DockerRuntime,
}

/// Follow sessions and when each was last renewed.
type Sessions = Arc<Mutex<HashMap<String, Instant>>>;

impl LogServer {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut sub = match self.client.subscribe(subject::logs(&self.site)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot serve logs");
                return;
            }
        };
        let sessions: Sessions = Default::default();
        let this = Arc::new(self);
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = sub.next() => match m { Some(m) => m, None => return },
            };
            let Some(reply) = msg.reply.clone() else { continue };
            let req = match decode::<LogRequest>(&msg.payload) {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!(error = %e, "refused a log request");
                    let chunk = this.chunk(None, Vec::new(), true, Some(format!("invalid request: {e}")));
                    this.send(&reply, &chunk).await;
                    continue;
                }
            };
            if req.follow {
                let renewal = sessions.lock().expect("sessions").insert(req.session.clone(), Instant::now()).is_some();
                if renewal {
                    continue; // the session's follow is running; its lease is extended
                }
            }
            let (this, sessions, shutdown) = (this.clone(), sessions.clone(), shutdown.clone());
            tokio::spawn(async move { this.answer(req, reply.to_string(), sessions, shutdown).await });
        }
    }

    fn chunk(&self, o: Option<&Observed>, lines: Vec<String>, done: bool, error: Option<String>) -> LogChunk {
        LogChunk {
            site: self.site.clone(),
            host: self.host.clone(),
            service: o.map(|o| o.service.clone()),
            replica: o.map(|o| o.replica),
            lines,
            done,
            error,
        }
    }

    async fn send(&self, reply: &str, chunk: &LogChunk) {
        let body = serde_json::to_vec(chunk).expect("chunks serialize");
        if let Err(e) = self.client.publish(reply.to_string(), body.into()).await {
            tracing::debug!(error = %e, "log chunk not sent");
        }
    }

    /// Sends the tails of this host's matching containers, `done`, then follows if asked.
    async fn answer(self: Arc<Self>, req: LogRequest, reply: String, sessions: Sessions, shutdown: CancellationToken) {
        let containers = match self.runtime.list().await {
            Ok(all) => all
                .into_iter()
                .filter(|o| o.app == req.app && req.service.as_ref().is_none_or(|s| &o.service == s))
                .collect::<Vec<_>>(),
            Err(e) => {
                let chunk = self.chunk(None, Vec::new(), true, Some(format!("cannot list containers: {e}")));
                return self.send(&reply, &chunk).await;
            }
        };
        let since = req.since_secs.map(|s| (edge_bus::time::now_ms() / 1000) as i64 - s as i64);
        let keep = |line: &str| req.grep.as_deref().is_none_or(|g| line.contains(g));
        for o in &containers {
            let mut pending = String::new();
            let mut lines = Vec::new();
            let mut out = Box::pin(self.runtime.logs(&o.id, req.tail, since, false));
            while let Some(frame) = out.next().await {
                match frame {
                    Ok(b) => pending.push_str(&String::from_utf8_lossy(&b)),
                    Err(e) => {
                        tracing::debug!(error = %e, "log stream ended");
                        break;
                    }
                }
            }
            lines.extend(pending.lines().filter(|l| keep(l)).map(cut));
            for part in lines.chunks(CHUNK_LINES) {
                self.send(&reply, &self.chunk(Some(o), part.to_vec(), false, None)).await;
            }
        }
        self.send(&reply, &self.chunk(None, Vec::new(), true, None)).await;
        if !req.follow {
            return;
        }
        // Follow: new lines of each container until the session lapses.
        let lease = shutdown.child_token();
        for o in containers {
            let (this, reply, lease, grep) = (self.clone(), reply.clone(), lease.clone(), req.grep.clone());
            tokio::spawn(async move {
                let now = (edge_bus::time::now_ms() / 1000) as i64;
                let mut out = Box::pin(this.runtime.logs(&o.id, 0, Some(now), true));
                let mut pending = String::new();
                loop {
                    let frame = tokio::select! {
                        _ = lease.cancelled() => return,
                        f = out.next() => match f { Some(Ok(b)) => b, _ => return },
                    };
                    pending.push_str(&String::from_utf8_lossy(&frame));
                    let Some(end) = pending.rfind('\n') else { continue };
                    let complete: String = pending.drain(..=end).collect();
                    let lines: Vec<String> =
                        complete.lines().filter(|l| grep.as_deref().is_none_or(|g| l.contains(g))).map(cut).collect();
                    if !lines.is_empty() {
                        this.send(&reply, &this.chunk(Some(&o), lines, false, None)).await;
                    }
                }
            });
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let last = sessions.lock().expect("sessions").get(&req.session).copied();
            if last.is_none_or(|t| t.elapsed() > FOLLOW_LEASE) {
                break;
            }
        }
        sessions.lock().expect("sessions").remove(&req.session);
        lease.cancel();
    }
}

fn cut(line: &str) -> String {
    if line.len() <= MAX_LINE {
        return line.to_string();
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}
