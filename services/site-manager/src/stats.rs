//! Site telemetry: every few seconds this host's CPU, memory and disk and each of its
//! containers' CPU and memory; and every container lifecycle event (start, exit, OOM kill,
//! restart) as it happens. Both go to the site's own `TELEMETRY` stream (bounded, newest kept),
//! so they are recorded with the WAN down and reach the hub when it is back.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use edge_types::telemetry::{ContainerStats, HostStats, LifecycleEvent};
use edge_types::{subject, Name};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::runtime::DockerRuntime;

/// Busy and total CPU time of the host, from `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_cpu(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    let idle = v[3] + v.get(4).copied().unwrap_or(0); // idle + iowait
    let total: u64 = v.iter().take(8).sum();
    Some(CpuTimes { busy: total.saturating_sub(idle), total })
}

/// Busy share between two samples, 0 to 1.
pub fn cpu_ratio(before: CpuTimes, now: CpuTimes) -> f64 {
    let total = now.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    (now.busy.saturating_sub(before.busy) as f64 / total as f64).clamp(0.0, 1.0)
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

pub struct Collector {
    pub js: jetstream::Context,
    pub site: Name,
    pub host: Name,
    pub runtime: DockerRuntime,
    pub every: Duration,
    pub cpus: u32,
}

impl Collector {
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        tokio::spawn(this.clone().lifecycle(shutdown.clone()));
        let mut before = read_cpu();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(this.every) => {}
            }
            let now = read_cpu();
            let sample = this.sample(cpu_ratio(before, now)).await;
            before = now;
            let body = serde_json::to_vec(&sample).expect("stats serialize");
            this.store(subject::host_stats(&this.site, &this.host), body).await;
        }
    }

    async fn sample(&self, cpu: f64) -> HostStats {
        let at_ms = edge_bus::time::now_ms();
        let (total, available) = parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
        let containers = match self.runtime.list().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list containers for stats");
                Vec::new()
            }
        };
        let running: Vec<_> = containers.into_iter().filter(|o| o.running()).collect();
        let usage = futures::future::join_all(running.iter().map(|o| self.runtime.usage(&o.id))).await;
        let containers = running
            .iter()
            .zip(usage)
            .filter_map(|(o, u)| {
                let (cpu_cores, memory_bytes) = u.ok()?;
                Some(ContainerStats {
                    app: o.app.clone(),
                    service: o.service.clone(),
                    replica: o.replica,
                    container_id: o.id.clone(),
                    cpu_cores,
                    memory_bytes,
                })
            })
            .collect();
        HostStats {
            site: self.site.clone(),
            host: self.host.clone(),
            at_ms,
            cpu_ratio: cpu,
            cpus: self.cpus,
            memory_total_bytes: total,
            memory_available_bytes: available,
            disk_free_bytes: crate::inventory::free_bytes(std::path::Path::new("/")).unwrap_or(0),
            containers,
        }
    }

    /// Records each lifecycle event of this host's containers; re-subscribes if Docker's event
    /// stream breaks.
    async fn lifecycle(self: Arc<Self>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let mut events = Box::pin(self.runtime.lifecycle());
            loop {
                let e = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    e = events.next() => match e { Some(e) => e, None => break },
                };
                let event = LifecycleEvent {
                    site: self.site.clone(),
                    host: self.host.clone(),
                    at_ms: edge_bus::time::now_ms(),
                    app: e.app,
                    service: e.service,
                    replica: e.replica,
                    container_id: e.id,
                    event: e.event,
                    exit_code: e.exit_code,
                };
                let body = serde_json::to_vec(&event).expect("events serialize");
                self.store(subject::lifecycle(&self.site, &self.host), body).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn store(&self, subject: String, body: Vec<u8>) {
        let stored = match self.js.publish(subject, body.into()).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            tracing::debug!(error = %e, "telemetry sample not stored at the site");
        }
    }
}

fn read_cpu() -> CpuTimes {
    parse_cpu(&std::fs::read_to_string("/proc/stat").unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_from_proc() {
        let a = parse_cpu("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let b = parse_cpu("cpu  150 0 150 750 100 0 0 0 0 0\n").unwrap();
        assert_eq!(a, CpuTimes { busy: 200, total: 1000 });
        assert!((cpu_ratio(a, b) - 100.0 / 150.0).abs() < 1e-9);
        assert_eq!(cpu_ratio(b, b), 0.0);
        assert_eq!(
            parse_meminfo("MemTotal:       1000 kB\nMemFree: 1 kB\nMemAvailable:    400 kB\n"),
            (1_024_000, 409_600)
        );
    }
}
