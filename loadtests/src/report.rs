//! The one table `make bench` prints: each measured figure beside its ceiling or target.

use std::time::Duration;

use crate::catchup::Catchup;
use crate::fleet::FleetRun;
use crate::footprint::Footprint;
use crate::ingest::IngestRun;
use crate::placement::PlacementRun;
use crate::secrets::SecretsRun;
use crate::staging::StagingRun;
use crate::storm::Storm;

#[derive(Default)]
pub struct Table {
    rows: Vec<[String; 4]>,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The value at quantile `q` (0..=1) of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

impl Table {
    fn row(&mut self, scenario: &str, measured: String, baseline: String, note: String) {
        self.rows.push([scenario.into(), measured, baseline, note]);
    }

    pub fn catchup(&mut self, events: u64, ours: &Catchup, raw: &Catchup) {
        let (o50, o99) = (quantile(&ours.times, 0.5), quantile(&ours.times, 0.99));
        let (r50, r99) = (quantile(&raw.times, 0.5), quantile(&raw.times, 0.99));
        self.row(
            &format!("WAN-cut catch-up, {events} events, p50"),
            secs(o50),
            format!("{} raw sourcing", secs(r50)),
            format!("ratio {:.2}", o50.as_secs_f64() / r50.as_secs_f64().max(1e-9)),
        );
        self.row(
            &format!("WAN-cut catch-up, {events} events, p99 ({} cuts)", ours.times.len()),
            secs(o99),
            format!("{} raw sourcing", secs(r99)),
            "target < 5 s".into(),
        );
        let rate = |c: &Catchup| events as f64 / quantile(&c.times, 0.5).as_secs_f64().max(1e-9);
        self.row(
            "drain rate after a cut",
            format!("{:.0} ev/s", rate(ours)),
            format!("{:.0} ev/s raw", rate(raw)),
            String::new(),
        );
        self.row(
            "lost / duplicated events",
            format!("{} / {}", ours.lost, ours.duplicated),
            format!("{} / {} raw", raw.lost, raw.duplicated),
            format!("{} events checked", ours.checked),
        );
    }

    pub fn durability(&mut self, events: u64, always: f64, default: f64) {
        self.row(
            &format!("site publish rate, sync_interval always ({events} acked)"),
            format!("{always:.0} msg/s"),
            format!("{default:.0} msg/s default (2 min)"),
            format!("cost: {:.1}x slower", default / always.max(1e-9)),
        );
    }

    pub fn storm(&mut self, sites: usize, s: &Storm) {
        self.row(
            &format!("reconnect storm, {sites} leaf sites: all connected"),
            secs(s.all_connected),
            format!("first {}", secs(s.first_connected)),
            format!("median {}", secs(s.median_connected)),
        );
        self.row(
            "reconnect storm: all events at the hub",
            secs(s.all_events),
            format!("{} events", s.events),
            format!("lost {} / dup {}", s.lost, s.duplicated),
        );
        self.row(
            "reconnect storm: new desired state at every site",
            secs(s.all_desired),
            format!("applied at {}", secs(s.applied)),
            String::new(),
        );
        self.row(
            "reconnect storm: hub CPU",
            format!("{:.1} CPU-s", s.hub_cpu_secs),
            format!("over {}", secs(s.window)),
            format!("{:.0}% of one core", 100.0 * s.hub_cpu_secs / s.window.as_secs_f64().max(1e-9)),
        );
    }

    pub fn ingest(&mut self, r: &IngestRun) {
        let rate = |d: Duration| r.messages as f64 / d.as_secs_f64().max(1e-9);
        let cores = |cpu: f64, d: Duration| cpu / d.as_secs_f64().max(1e-9);
        self.row(
            &format!("telemetry from {} sites, stored (acked)", r.sites),
            format!("{:.0} msg/s", rate(r.stored.wall)),
            format!("{:.0} msg/s raw JetStream", rate(r.raw.wall)),
            format!(
                "ratio {:.2}; {} x {} B",
                r.raw.wall.as_secs_f64() / r.stored.wall.as_secs_f64(),
                r.messages,
                r.bytes
            ),
        );
        self.row(
            "telemetry ingested by the telemetry service",
            format!("{:.0} msg/s", rate(r.ingested.wall)),
            "target 100000 msg/s".into(),
            format!(
                "hub {:.2} cores (target < 1), raw {:.2}",
                cores(r.ingested.hub_cpu, r.ingested.wall),
                cores(r.raw.hub_cpu, r.raw.wall)
            ),
        );
    }

    pub fn secrets(&mut self, s: &SecretsRun) {
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        let (rt50, rt99) = (quantile(&s.round_trip, 0.5), quantile(&s.round_trip, 0.99));
        self.row(
            &format!("secret rotation to all {} sites, p50 / p99", s.sites),
            format!("{} / {}", ms(quantile(&s.all_sites, 0.5)), ms(quantile(&s.all_sites, 0.99))),
            format!("{} / {} request/reply", ms(rt50), ms(rt99)),
            format!("target p99 < 250 ms; {} rotations", s.all_sites.len()),
        );
        self.row(
            "secret rotation, per site, p50 / p99",
            format!("{} / {}", ms(quantile(&s.per_site, 0.5)), ms(quantile(&s.per_site, 0.99))),
            format!(
                "ratio p99 {:.0}x a round trip",
                quantile(&s.per_site, 0.99).as_secs_f64() / rt99.as_secs_f64().max(1e-9)
            ),
            format!("{} site deliveries, each opened with the site's key", s.per_site.len()),
        );
    }

    pub fn staging(&mut self, s: &StagingRun) {
        let mb = |b: u64| format!("{:.1} MB", b as f64 / (1 << 20) as f64);
        let total = s.image_bytes * s.sites as u64;
        self.row(
            &format!("image staging, {} to {} sites", mb(s.image_bytes), s.sites),
            secs(s.staged),
            format!("{} plain JetStream", secs(s.raw)),
            format!(
                "ratio {:.2}; {} sent of {} needed",
                s.staged.as_secs_f64() / s.raw.as_secs_f64().max(1e-9),
                mb(s.sent),
                mb(total)
            ),
        );
        self.row(
            "image staging: update adding one 1 MB layer",
            secs(s.update),
            format!("{} new bytes", mb(s.update_new)),
            format!("{} sent", mb(s.update_sent)),
        );
    }

    pub fn placement(&mut self, p: &PlacementRun) {
        let share = 100.0 * p.matched as f64 / p.decisions.max(1) as f64;
        self.row(
            &format!("placement, {} apps x {} sites: select_sites", p.apps, p.sites),
            format!("{:.0} dec/s", p.rate(p.decisions, p.select_sites)),
            "target 1000000 dec/s".into(),
            format!("{} matched ({share:.1}%), {}", p.matched, secs(p.select_sites)),
        );
        self.row(
            "placement: labels merged once per site",
            format!("{:.0} dec/s", p.rate(p.decisions, p.precomputed)),
            "target 1000000 dec/s".into(),
            format!("{} decisions in {}", p.decisions, secs(p.precomputed)),
        );
        let (w, c, l) = (&p.write_pass, &p.ceiling, &p.like_desired);
        let ours = p.rate(p.written, w.wall);
        let raw = p.rate(p.written, c.wall);
        let like = p.rate(p.written, l.wall);
        self.row(
            "placement: desired states written (acked, file)",
            format!("{ours:.0} msg/s"),
            format!("{raw:.0} msg/s raw JetStream"),
            format!("ratio {:.2}; target 100000 msg/s", ours / raw.max(1e-9)),
        );
        self.row(
            "placement: the same, beside a stream like DESIRED",
            format!("{ours:.0} msg/s"),
            format!("{like:.0} msg/s raw, msg ids, 1/subject"),
            format!("ratio {:.2}", ours / like.max(1e-9)),
        );
        self.row(
            "placement: whole write pass, decisions / wall time",
            format!("{:.0} dec/s", p.rate(p.decisions, w.wall)),
            format!("{} for {} writes", secs(w.wall), p.written),
            format!("payload {} B avg, window {}", p.avg_payload(), p.window),
        );
        let us = |cpu: f64| 1e6 * cpu / p.written.max(1) as f64;
        let busy = |x: &crate::placement::Pass| (x.hub_cpu + x.client_cpu) / x.wall.as_secs_f64().max(1e-9);
        self.row(
            "placement: CPU per write, hub + client",
            format!("{:.1} + {:.1} us", us(w.hub_cpu), us(w.client_cpu)),
            format!(
                "{:.1} + {:.1} us raw, {:.1} + {:.1} like",
                us(c.hub_cpu),
                us(c.client_cpu),
                us(l.hub_cpu),
                us(l.client_cpu)
            ),
            format!("{:.1} cores busy (raw {:.1})", busy(w), busy(c)),
        );
    }

    /// Rollout to a fleet: time until 50%, 99% and all sites acknowledged, beside the raw
    /// fan-out and echo of the same hub and connections; then each central service's memory.
    pub fn fleet(&mut self, r: &FleetRun, target: Option<Duration>) {
        let total = r.sites + r.leaf_sites;
        let at = |v: &[Duration], of: usize, q: f64| FleetRun::quantile(v, of, q).map(secs).unwrap_or("-".into());
        let who = format!("{} sites ({} simulated + {} leaf)", total, r.sites, r.leaf_sites);
        self.row(
            &format!("rollout to {who}: 99% acknowledged"),
            at(&r.acked, total, 0.99),
            format!("{} raw fan-out + echo", at(&r.raw.literal, r.sites, 0.99)),
            match target {
                Some(t) => {
                    format!("target < {}; 50% {}, all {}", secs(t), at(&r.acked, total, 0.5), at(&r.acked, total, 1.0))
                }
                None => format!("50% {}, all {}", at(&r.acked, total, 0.5), at(&r.acked, total, 1.0)),
            },
        );
        self.row(
            &format!("rollout to {} sites: change received at 99% of sites", r.sites),
            at(&r.received, r.sites, 0.99),
            format!("{} raw, {} shards, replacing", at(&r.raw.sharded_change, r.sites, 0.99), crate::sim::SHARDS),
            format!(
                "apply replied after {}; raw wildcard first {}, in one stream {}",
                secs(r.apply_reply),
                at(&r.raw.wildcard_first, r.sites, 0.99),
                at(&r.raw.wildcard_change, r.sites, 0.99)
            ),
        );
        if r.leaf_sites > 0 {
            self.row(
                &format!("rollout: real leaf sites (Docker), all {} acknowledged", r.leaf_sites),
                at(&r.leaf_acked, r.leaf_sites, 1.0),
                String::new(),
                "container replaced and running".into(),
            );
        }
        self.row(
            &format!("rollout to {total} sites: hub CPU"),
            format!("{:.1} CPU-s", r.hub_cpu),
            format!("over {}", secs(r.window)),
            format!("first version everywhere {}; {} sites connected in {}", secs(r.first_all), r.sites, secs(r.setup)),
        );
        let central: u64 = r.memory.iter().filter(|(n, _)| !n.starts_with("nats-server")).map(|(_, b)| *b).sum();
        let parts: Vec<String> = r.memory.iter().map(|(n, b)| format!("{n} {:.1}", crate::procs::mib(*b))).collect();
        self.row(
            &format!("central services' memory at {total} sites"),
            format!("{:.1} MiB", crate::procs::mib(central)),
            parts.join(", "),
            "resident, MiB".into(),
        );
    }

    /// Memory of the central services per 1,000 sites: the growth between two fleet sizes.
    pub fn central_memory(&mut self, small: &FleetRun, large: &FleetRun) {
        let central = |r: &FleetRun| -> u64 {
            r.memory.iter().filter(|(n, _)| !n.starts_with("nats-server")).map(|(_, b)| *b).sum()
        };
        let hub =
            |r: &FleetRun| r.memory.iter().find(|(n, _)| n.starts_with("nats-server")).map(|(_, b)| *b).unwrap_or(0);
        let (a, b) = (small.sites + small.leaf_sites, large.sites + large.leaf_sites);
        if b <= a {
            return;
        }
        let per = |x: u64, y: u64| crate::procs::mib(y.saturating_sub(x)) * 1000.0 / (b - a) as f64;
        self.row(
            "central services' memory per 1,000 sites",
            format!("{:.1} MiB", per(central(small), central(large))),
            "target < 50 MiB".into(),
            format!(
                "growth from {a} to {b} sites; the hub's nats-server {:.1} MiB per 1,000",
                per(hub(small), hub(large))
            ),
        );
    }

    /// The site agent's resident memory, idle and running containers.
    pub fn footprint(&mut self, f: &Footprint) {
        let mib = |b: u64| format!("{:.1} MiB", crate::procs::mib(b));
        self.row(
            "site-manager resident memory, idle",
            mib(f.idle),
            "target < 15 MiB".into(),
            format!(
                "{} heap and stacks + {} code; after {} settled; K3s agent ~275 MiB, EdgeCore >= 70 MB",
                mib(f.idle_parts.0),
                mib(f.idle_parts.1),
                secs(f.settle)
            ),
        );
        self.row(
            &format!("site-manager resident memory, {} containers", f.containers),
            mib(f.busy),
            format!("peak {}", mib(f.peak)),
            format!("real containers on the Docker Engine; {} profile build", f.build),
        );
    }

    pub fn print(&self) {
        let headers = ["SCENARIO", "MEASURED", "BASELINE / CEILING", "NOTE"];
        let mut w = headers.map(|h| h.len());
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.len());
            }
        }
        let line = |cells: [&str; 4]| {
            let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = w[i])).collect();
            println!("{}", s.join("  ").trim_end());
        };
        line(headers);
        for r in &self.rows {
            line([&r[0], &r[1], &r[2], &r[3]]);
        }
    }
}
