//! The site leader's placement of replicas onto hosts: pure, so every rule is unit-tested.
//!
//! Stability first: a replica stays on its host while that host is live, still matches and
//! still has room, so a new leader, a reconnect or an unrelated change never moves (restarts) a
//! healthy container. Only replicas without a valid host are placed: on a live host that
//! matches the host selector, has the CPU, memory and GPUs free, and respects anti-affinity;
//! among those, the one with the fewest replicas of the service (spread), then the fewest
//! containers, then by name.

use std::collections::{BTreeMap, BTreeSet};

use edge_types::app::{AppSpec, Mode, ServiceSpec};
use edge_types::cluster::{Assignment, Placed, Unplaced};
use edge_types::desired::DesiredApp;
use edge_types::policy::shortfall;
use edge_types::selector::LabelOrders;
use edge_types::site::HostInventory;
use edge_types::Name;

const MIB: f64 = 1024.0 * 1024.0;

/// What is left on a host.
struct Room {
    cpus: f64,
    memory: f64,
    gpus: u32,
    containers: usize,
    /// Replicas per (app, service).
    per_service: BTreeMap<(Name, Name), usize>,
}

impl Room {
    fn of(h: &HostInventory) -> Self {
        let unknown_is_unlimited = |v: f64| if v > 0.0 { v } else { f64::INFINITY };
        Self {
            cpus: unknown_is_unlimited(h.cpus as f64),
            memory: unknown_is_unlimited(h.memory_bytes as f64),
            gpus: h.gpu_count(),
            containers: 0,
            per_service: BTreeMap::new(),
        }
    }

    /// Why one more container of `svc` does not fit (None: it fits).
    fn lacks(&self, svc: &ServiceSpec) -> Option<String> {
        let r = &svc.resources;
        let cpus = r.cpus.unwrap_or(0.0);
        let memory = r.memory_mb.unwrap_or(0) as f64 * MIB;
        let gpus = r.gpus.unwrap_or(0);
        if cpus > self.cpus + 1e-9 {
            return Some(format!("needs {cpus} CPUs, {:.2} free", self.cpus));
        }
        if memory > self.memory {
            return Some(format!("needs {} MiB, {:.0} MiB free", r.memory_mb.unwrap_or(0), self.memory / MIB));
        }
        if gpus > self.gpus {
            return Some(format!("needs {gpus} GPUs, {} free", self.gpus));
        }
        None
    }

    fn take(&mut self, app: &Name, svc: &ServiceSpec) {
        let r = &svc.resources;
        self.cpus -= r.cpus.unwrap_or(0.0);
        self.memory -= r.memory_mb.unwrap_or(0) as f64 * MIB;
        self.gpus -= r.gpus.unwrap_or(0);
        self.containers += 1;
        *self.per_service.entry((app.clone(), svc.name.clone())).or_default() += 1;
    }

    fn replicas_of(&self, app: &Name, svc: &Name) -> usize {
        self.per_service.get(&(app.clone(), svc.clone())).copied().unwrap_or(0)
    }
}

/// One app being placed.
struct AppCtx<'a> {
    desired: &'a DesiredApp,
    spec: &'a AppSpec,
    /// Live hosts the host selector matches.
    matching: BTreeSet<Name>,
    /// Why each other live host does not match.
    unmatched: BTreeMap<Name, String>,
    placed: Vec<Placed>,
    unplaced: Vec<Unplaced>,
}

/// Places every replica of every app in `desired` onto the live `hosts`, keeping `previous`
/// placements that are still valid. Returns one assignment per app that has a spec.
pub fn assign(
    leader: &Name,
    desired: &BTreeMap<Name, DesiredApp>,
    hosts: &[HostInventory],
    previous: &BTreeMap<Name, Assignment>,
) -> BTreeMap<Name, Assignment> {
    let mut rooms: BTreeMap<Name, Room> = hosts.iter().map(|h| (h.host.clone(), Room::of(h))).collect();
    let inventory: BTreeMap<&Name, &HostInventory> = hosts.iter().map(|h| (&h.host, h)).collect();
    let mut apps: Vec<AppCtx> = desired
        .values()
        .filter_map(|d| d.spec.as_ref().map(|spec| (d, spec)))
        .map(|(d, spec)| {
            let policy = spec.check().unwrap_or_default();
            let orders = LabelOrders::from_map(d.orders.clone());
            let mut matching = BTreeSet::new();
            let mut unmatched = BTreeMap::new();
            for h in hosts {
                let why = policy.hosts.explain_for("host", &h.attributes(), &orders);
                if why.is_empty() {
                    matching.insert(h.host.clone());
                } else {
                    unmatched.insert(h.host.clone(), why.join("; "));
                }
            }
            AppCtx { desired: d, spec, matching, unmatched, placed: Vec::new(), unplaced: Vec::new() }
        })
        .collect();

    // 1. Keep what is valid, for every app before any new placement takes room.
    for app in &mut apps {
        let Some(prev) = previous.get(&app.desired.app) else { continue };
        let mut sorted = prev.replicas.clone();
        sorted.sort();
        for p in sorted {
            let Some(svc) = app.spec.services.iter().find(|s| s.name == p.service) else { continue };
            let Some(room) = rooms.get_mut(&p.host) else { continue }; // host down or gone
            let in_range = match svc.mode {
                Mode::Replicated => p.replica < svc.replicas,
                Mode::OnePerMatchingHost => room.replicas_of(&app.desired.app, &svc.name) == 0,
            };
            let duplicate = app.placed.iter().any(|q| q.service == p.service && q.replica == p.replica);
            let crowded = svc.anti_affinity && room.replicas_of(&app.desired.app, &svc.name) > 0;
            if in_range
                && !duplicate
                && !crowded
                && app.matching.contains(&p.host)
                && shortfall(svc, inventory[&p.host]).is_none()
                && wrong_arch(app.desired, svc, inventory[&p.host]).is_none()
                && room.lacks(svc).is_none()
            {
                room.take(&app.desired.app, svc);
                app.placed.push(p);
            }
        }
    }

    // 2. Place what is missing.
    for app in &mut apps {
        let name = app.desired.app.clone();
        for svc in &app.spec.services {
            let used: BTreeSet<u32> = app.placed.iter().filter(|p| p.service == svc.name).map(|p| p.replica).collect();
            match svc.mode {
                Mode::Replicated => {
                    for replica in (0..svc.replicas).filter(|r| !used.contains(r)) {
                        place_one(app, &name, svc, replica, &mut rooms, &inventory, None);
                    }
                }
                Mode::OnePerMatchingHost => {
                    let mut free_ids = (0u32..).filter(|r| !used.contains(r));
                    // A host of another architecture than the image's does not match.
                    let targets: Vec<Name> = app
                        .matching
                        .iter()
                        .filter(|h| rooms.get(*h).is_some_and(|r| r.replicas_of(&name, &svc.name) == 0))
                        .filter(|h| wrong_arch(app.desired, svc, inventory[*h]).is_none())
                        .cloned()
                        .collect();
                    for host in targets {
                        let replica = free_ids.next().expect("unbounded");
                        place_one(app, &name, svc, replica, &mut rooms, &inventory, Some(&host));
                    }
                }
            }
        }
    }

    apps.into_iter()
        .map(|mut app| {
            app.placed.sort();
            let a = Assignment {
                app: app.desired.app.clone(),
                generation: app.desired.generation,
                leader: leader.clone(),
                replicas: app.placed,
                unplaced: app.unplaced,
            };
            (a.app.clone(), a)
        })
        .collect()
}

/// Why `host` cannot run the image of `svc` (another CPU architecture), for an image from the store.
fn wrong_arch(d: &DesiredApp, svc: &ServiceSpec, host: &HostInventory) -> Option<String> {
    edge_types::image::arch_mismatch(d.images.get(&svc.image)?, host)
}

/// Places one replica on the best host (or on `only`), or records why it cannot be placed.
fn place_one(
    app: &mut AppCtx,
    name: &Name,
    svc: &ServiceSpec,
    replica: u32,
    rooms: &mut BTreeMap<Name, Room>,
    inventory: &BTreeMap<&Name, &HostInventory>,
    only: Option<&Name>,
) {
    let mut why_not: Vec<String> = Vec::new();
    let mut best: Option<(usize, usize, Name)> = None;
    for (host, room) in rooms.iter() {
        if only.is_some_and(|o| o != host) {
            continue;
        }
        let reason = if let Some(u) = app.unmatched.get(host) {
            Some(u.clone())
        } else if let Some(s) = shortfall(svc, inventory[host]) {
            Some(s)
        } else if let Some(a) = wrong_arch(app.desired, svc, inventory[host]) {
            Some(a)
        } else if svc.anti_affinity && room.replicas_of(name, &svc.name) > 0 {
            Some("already runs a replica (anti-affinity)".into())
        } else {
            room.lacks(svc)
        };
        match reason {
            Some(r) => why_not.push(format!("{host}: {r}")),
            None => {
                let key = (room.replicas_of(name, &svc.name), room.containers, host.clone());
                if best.as_ref().is_none_or(|b| key < *b) {
                    best = Some(key);
                }
            }
        }
    }
    match best {
        Some((_, _, host)) => {
            rooms.get_mut(&host).expect("candidate").take(name, svc);
            app.placed.push(Placed { service: svc.name.clone(), replica, host });
        }
        None => {
            let reason = if why_not.is_empty() {
                "no live host at the site".to_string()
            } else {
                format!("no host can take it: {}", why_not.join("; "))
            };
            app.unplaced.push(Unplaced { service: svc.name.clone(), replica, reason });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_types::site::LabelValue;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn host(name: &str, cpus: u32, labels: &[(&str, &str)]) -> HostInventory {
        HostInventory {
            host: n(name),
            arch: "amd64".into(),
            os: "linux".into(),
            cpus,
            memory_bytes: 4 << 30,
            disk_bytes: 0,
            gpus: vec![],
            devices: vec![],
            labels: labels.iter().map(|(k, v)| (k.to_string(), LabelValue(v.to_string()))).collect(),
        }
    }

    fn app(name: &str, hosts: &str, services: serde_json::Value) -> (Name, DesiredApp) {
        let spec: AppSpec = serde_json::from_value(serde_json::json!({
            "name": name, "version": "1", "services": services, "placement": {"sites": "", "hosts": hosts}
        }))
        .unwrap();
        let orders = BTreeMap::from([("size".to_string(), vec!["small".into(), "medium".into(), "large".into()])]);
        (
            n(name),
            DesiredApp {
                site: n("s1"),
                app: n(name),
                generation: 1,
                spec: Some(spec),
                orders,
                images: Default::default(),
            },
        )
    }

    fn on(a: &Assignment, host: &str) -> usize {
        a.replicas.iter().filter(|p| p.host.as_str() == host).count()
    }

    #[test]
    fn hosts_of_another_architecture_than_the_images_are_passed_over() {
        let mut hosts = [host("h1", 4, &[]), host("h2", 4, &[])];
        hosts[1].arch = "arm64".into();
        let (name, mut d) = app("cam", "", serde_json::json!([{"name": "c", "image": "x/cam:1", "replicas": 2}]));
        let blob = edge_types::image::Blob { digest: format!("sha256:{}", "a".repeat(64)), size: 1 };
        d.images.insert(
            "x/cam:1".into(),
            edge_types::image::ImageRecord::new(
                "x/cam:1".into(),
                vec![edge_types::image::ImageVariant {
                    platform: edge_types::image::Platform {
                        os: "linux".into(),
                        architecture: "arm64".into(),
                        variant: None,
                    },
                    config: blob.clone(),
                    layers: vec![blob],
                }],
                String::new(),
                0,
            ),
        );
        let desired = BTreeMap::from([(name.clone(), d)]);
        let a = &assign(&n("h1"), &desired, &hosts, &BTreeMap::new())[&name];
        assert_eq!((on(a, "h1"), on(a, "h2")), (0, 2), "{a:?}");
    }

    #[test]
    fn spreads_replicas_and_respects_the_host_selector() {
        let hosts = [host("h1", 4, &[("size", "small")]), host("h2", 4, &[("size", "large")]), host("h3", 4, &[])];
        let desired = BTreeMap::from([
            app("web", "", serde_json::json!([{"name": "w", "image": "i", "replicas": 3}])),
            app("cam", "size >= medium", serde_json::json!([{"name": "c", "image": "i", "replicas": 2}])),
        ]);
        let out = assign(&n("h1"), &desired, &hosts, &BTreeMap::new());
        let web = &out[&n("web")];
        assert_eq!((on(web, "h1"), on(web, "h2"), on(web, "h3")), (1, 1, 1), "{web:?}");
        let cam = &out[&n("cam")];
        assert_eq!(on(cam, "h2"), 2, "{cam:?}");
        assert!(cam.unplaced.is_empty());
    }

    #[test]
    fn keeps_placements_and_moves_only_what_lost_its_host() {
        let hosts = [host("h1", 4, &[]), host("h2", 4, &[]), host("h3", 4, &[])];
        let desired = BTreeMap::from([app("web", "", serde_json::json!([{"name": "w", "image": "i", "replicas": 2}]))]);
        let first = assign(&n("h1"), &desired, &hosts, &BTreeMap::new());
        // A new leader with the same facts changes nothing.
        assert_eq!(assign(&n("h2"), &desired, &hosts, &first)[&n("web")].replicas, first[&n("web")].replicas);
        // h1 goes down: its replica moves, the other stays.
        let before = first[&n("web")].replicas.clone();
        let lost = before.iter().find(|p| p.host.as_str() == "h1").cloned();
        let after = assign(&n("h2"), &desired, &hosts[1..], &first)[&n("web")].replicas.clone();
        assert_eq!(after.len(), 2);
        assert!(after.iter().all(|p| p.host.as_str() != "h1"));
        for p in before.iter().filter(|p| p.host.as_str() != "h1") {
            assert!(after.contains(p), "a replica on a live host moved: {before:?} -> {after:?}");
        }
        if let Some(lost) = lost {
            assert!(after.iter().any(|p| p.replica == lost.replica));
        }
    }

    #[test]
    fn one_per_matching_host_and_anti_affinity() {
        let hosts = [host("h1", 4, &[("camera", "1")]), host("h2", 4, &[("camera", "2")]), host("h3", 4, &[])];
        let desired = BTreeMap::from([
            app("agent", "camera", serde_json::json!([{"name": "a", "image": "i", "mode": "one-per-matching-host"}])),
            app("db", "", serde_json::json!([{"name": "d", "image": "i", "replicas": 4, "anti_affinity": true}])),
        ]);
        let out = assign(&n("h1"), &desired, &hosts, &BTreeMap::new());
        let agent = &out[&n("agent")];
        assert_eq!((on(agent, "h1"), on(agent, "h2"), on(agent, "h3")), (1, 1, 0));
        let db = &out[&n("db")];
        assert_eq!(db.replicas.len(), 3);
        assert_eq!(db.unplaced.len(), 1);
        assert!(db.unplaced[0].reason.contains("anti-affinity"), "{:?}", db.unplaced);
        // A new camera host gets its own replica; the others keep theirs.
        let more = [hosts[0].clone(), hosts[1].clone(), hosts[2].clone(), host("h4", 4, &[("camera", "1")])];
        let next = assign(&n("h1"), &desired, &more, &out);
        assert_eq!(next[&n("agent")].replicas.len(), 3);
        assert!(agent.replicas.iter().all(|p| next[&n("agent")].replicas.contains(p)));
    }

    #[test]
    fn resources_are_counted_and_shortages_explained() {
        let hosts = [host("h1", 2, &[]), host("h2", 1, &[])];
        let desired = BTreeMap::from([app(
            "ml",
            "",
            serde_json::json!([{"name": "m", "image": "i", "replicas": 3, "resources": {"cpus": 1.0}},
                               {"name": "g", "image": "i", "resources": {"gpus": 1}}]),
        )]);
        let out = &assign(&n("h1"), &desired, &hosts, &BTreeMap::new())[&n("ml")];
        assert_eq!(out.replicas.iter().filter(|p| p.service.as_str() == "m").count(), 3);
        assert_eq!(out.unplaced.len(), 1, "{out:?}");
        assert!(out.unplaced[0].reason.contains("needs 1 GPUs, the host has 0"), "{:?}", out.unplaced);
        let busy = [host("h1", 1, &[])];
        let out = &assign(&n("h1"), &desired, &busy, &BTreeMap::new())[&n("ml")];
        assert!(out.unplaced.iter().any(|u| u.reason.contains("1 CPUs, 0.00 free")), "{:?}", out.unplaced);
    }
}
