//! The pure heart of the site: compare desired state with the containers that exist and decide
//! what to do. No I/O here, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use edge_types::app::ServiceSpec;
use edge_types::cluster::Assignment;
use edge_types::desired::DesiredApp;
use edge_types::Name;

/// A container of ours as Docker reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub id: String,
    pub app: Name,
    pub service: Name,
    pub replica: u32,
    pub generation: u64,
    pub digest: String,
    pub image: String,
    /// Docker's id of the image (`sha256:...`).
    pub image_id: String,
    /// Docker state: `running`, `exited`, `created`, ...
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or empty without a probe.
    pub health: String,
    /// The Docker networks it is connected to (or will be, when stopped).
    pub networks: std::collections::BTreeSet<String>,
}

impl Observed {
    pub fn running(&self) -> bool {
        self.state == "running" || self.state == "restarting"
    }
}

/// A container that should exist.
#[derive(Clone, Debug, PartialEq)]
pub struct Wanted {
    pub app: Name,
    /// The app's tenant, whose secrets it uses.
    pub tenant: Name,
    pub version: String,
    pub generation: u64,
    pub service: ServiceSpec,
    pub replica: u32,
    pub digest: String,
    /// The service's image as the store resolved it (run by digest), if it is in the store.
    pub image: Option<edge_types::image::ImageRecord>,
    /// Whether the app's containers may open connections outside its network.
    pub outbound: bool,
    /// Other apps at the site whose networks this replica joins (they allow this app).
    pub peers: Vec<Peer>,
    /// The app's bus topics: the replica gets a connection to the site's bus scoped to them.
    pub bus: Option<edge_types::app::BusSpec>,
}

/// Another app whose network a replica joins, and whether that network has a way out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub app: Name,
    pub outbound: bool,
}

/// The apps whose networks `app`'s containers join: those that allow it, except, for an app
/// without a way out, those that have one.
fn peers_of(desired: &BTreeMap<Name, DesiredApp>, app: &Name, outbound: bool) -> Vec<Peer> {
    desired
        .values()
        .filter_map(|d| d.spec.as_ref())
        .filter(|s| &s.name != app && s.network.allow_from.contains(app) && (outbound || !s.network.outbound))
        .map(|s| Peer { app: s.name.clone(), outbound: s.network.outbound })
        .collect()
}

/// The containers a host must run, keyed by (app, service, replica).
pub type WantedSet = BTreeMap<(Name, Name, u32), Wanted>;

/// One step of convergence.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Nothing of this replica exists: create and start it.
    Create(Wanted),
    /// The replica exists but was made from another spec: remove it, then create the new one.
    Replace { old: String, wanted: Wanted },
    /// The replica has the right spec but is not running (it crashed or was killed): start it.
    Start { id: String },
    /// The container is not wanted (app removed, replica scaled away, duplicate).
    Remove { id: String },
}

impl Action {
    /// The app a new container is made for (creations and replacements).
    pub fn app(&self) -> Option<&Name> {
        match self {
            Action::Create(w) | Action::Replace { wanted: w, .. } => Some(&w.app),
            Action::Start { .. } | Action::Remove { .. } => None,
        }
    }
}

/// What a replica is made from: the service's spec and, for an image in the store, the image's
/// content (a tag pushed again with new content replaces the containers).
fn replica_digest(
    svc: &edge_types::app::ServiceSpec,
    bus: Option<&edge_types::app::BusSpec>,
    image: Option<&edge_types::image::ImageRecord>,
) -> String {
    match image {
        Some(i) => format!("{}-{}", svc.digest_with_bus(bus), &i.digest[7..19]),
        None => svc.digest_with_bus(bus),
    }
}

/// The containers this host must run, keyed by (app, service, replica): the replicas the
/// site's leader assigned to `host`, made from the current desired spec. Apps that have a spec
/// but no assignment yet are `held`: their containers are left exactly as they are.
pub fn wanted(
    desired: &BTreeMap<Name, DesiredApp>,
    assignments: &BTreeMap<Name, Assignment>,
    host: &Name,
) -> (WantedSet, BTreeSet<Name>) {
    let mut out = BTreeMap::new();
    let mut held = BTreeSet::new();
    for d in desired.values() {
        let Some(spec) = &d.spec else { continue };
        let Some(a) = assignments.get(&d.app) else {
            held.insert(d.app.clone());
            continue;
        };
        let peers = peers_of(desired, &d.app, spec.network.outbound);
        for p in a.replicas.iter().filter(|p| &p.host == host) {
            let Some(svc) = spec.services.iter().find(|s| s.name == p.service) else { continue };
            out.insert(
                (d.app.clone(), svc.name.clone(), p.replica),
                Wanted {
                    app: d.app.clone(),
                    tenant: spec.tenant.clone(),
                    version: spec.version.clone(),
                    generation: d.generation,
                    service: svc.clone(),
                    replica: p.replica,
                    digest: replica_digest(svc, spec.bus.used(), d.images.get(&svc.image)),
                    image: d.images.get(&svc.image).cloned(),
                    outbound: spec.network.outbound,
                    peers: peers.clone(),
                    bus: spec.bus.used().cloned(),
                },
            );
        }
    }
    (out, held)
}

/// Ties replicas to the secrets they use. A replica whose secrets are not all at the site yet
/// waits (returned, with why); the others get the versions of their `restart` secrets folded
/// into their digest, so a rotation replaces their containers (`in-place` secrets are
/// rewritten in the running container instead).
pub fn gate_secrets(
    wanted: &mut WantedSet,
    versions: &std::collections::HashMap<(Name, Name), u64>,
) -> BTreeMap<(Name, Name, u32), String> {
    use edge_types::secret::OnRotate;
    let mut waiting = BTreeMap::new();
    for (key, w) in wanted.iter_mut() {
        let refs = &w.service.secrets;
        let id = |r: &edge_types::secret::SecretRef| (w.tenant.clone(), r.name.clone());
        let missing: Vec<&str> =
            refs.iter().filter(|r| !versions.contains_key(&id(r))).map(|r| r.name.as_str()).collect();
        if !missing.is_empty() {
            waiting.insert(key.clone(), format!("waiting for secret {} to reach the site", missing.join(", ")));
            continue;
        }
        let restart: Vec<String> = refs
            .iter()
            .filter(|r| r.on_rotate == OnRotate::Restart)
            .map(|r| format!("{}={}", r.name, versions[&id(r)]))
            .collect();
        if !restart.is_empty() {
            w.digest = format!("{}-{}", w.digest, edge_types::app::digest_json(&restart));
        }
    }
    waiting
}

/// The actions that take `observed` to `wanted`. Healthy containers of an unchanged spec are
/// never touched, whatever else changed (generation, other services, a reconnect), and
/// containers of `held` apps are not touched at all.
pub fn plan(wanted: &BTreeMap<(Name, Name, u32), Wanted>, held: &BTreeSet<Name>, observed: &[Observed]) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut seen: BTreeSet<(Name, Name, u32)> = BTreeSet::new();
    // Prefer a running container with the right digest when there are several for one replica.
    let mut ordered: Vec<&Observed> = observed.iter().filter(|o| !held.contains(&o.app)).collect();
    ordered.sort_by_key(|o| {
        let w = wanted.get(&(o.app.clone(), o.service.clone(), o.replica));
        (w.is_none_or(|w| w.digest != o.digest), !o.running(), o.id.clone())
    });
    for o in ordered {
        let key = (o.app.clone(), o.service.clone(), o.replica);
        match wanted.get(&key) {
            None => actions.push(Action::Remove { id: o.id.clone() }),
            Some(_) if seen.contains(&key) => actions.push(Action::Remove { id: o.id.clone() }),
            Some(w) => {
                seen.insert(key);
                if w.digest != o.digest {
                    actions.push(Action::Replace { old: o.id.clone(), wanted: w.clone() });
                } else if !o.running() {
                    actions.push(Action::Start { id: o.id.clone() });
                }
            }
        }
    }
    for (key, w) in wanted {
        if !seen.contains(key) {
            actions.push(Action::Create(w.clone()));
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_types::app::{AppSpec, Placement};
    use edge_types::cluster::Placed;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    /// A secret of the default tenant.
    fn of_default(name: Name) -> (Name, Name) {
        (n("default"), name)
    }

    #[test]
    fn replicas_wait_for_their_secrets_and_restart_secrets_change_the_digest() {
        let mut with = svc("api", "img:1", 1);
        with.secrets = serde_json::from_value(serde_json::json!([
            {"name": "db"}, {"name": "cert", "on_rotate": "in-place"}
        ]))
        .unwrap();
        let d = desired("web", 1, vec![with, svc("plain", "img:1", 1)]);
        let (base, _) = super::wanted(&d, &assign_all(&d), &n("h1"));
        let key = (n("web"), n("api"), 0);

        let mut w = base.clone();
        let waiting = gate_secrets(&mut w, &[(of_default(n("db")), 1)].into());
        assert_eq!(waiting[&key], "waiting for secret cert to reach the site");
        assert_eq!(waiting.len(), 1, "services without secrets never wait");

        let digest = |db: u64, cert: u64| {
            let mut w = base.clone();
            assert!(gate_secrets(&mut w, &[(of_default(n("db")), db), (of_default(n("cert")), cert)].into()).is_empty());
            w[&key].digest.clone()
        };
        assert_ne!(digest(1, 1), base[&key].digest);
        assert_ne!(digest(1, 1), digest(2, 1), "a rotated restart secret replaces the container");
        assert_eq!(digest(1, 1), digest(1, 2), "an in-place secret does not");
        let mut w = base.clone();
        gate_secrets(&mut w, &[(of_default(n("db")), 1), (of_default(n("cert")), 1)].into());
        let plain = (n("web"), n("plain"), 0);
        assert_eq!(w[&plain].digest, base[&plain].digest);
    }

    #[test]
    fn apps_join_the_networks_of_apps_that_allow_them_but_never_find_a_way_out_there() {
        let mut all = desired("shop", 1, vec![svc("web", "i", 1)]);
        all.extend(desired("friend", 1, vec![svc("main", "i", 1)]));
        all.extend(desired("stranger", 1, vec![svc("main", "i", 1)]));
        let net = |all: &mut BTreeMap<Name, DesiredApp>, app: &str, outbound: bool, allow: &[&str]| {
            let spec = all.get_mut(&n(app)).unwrap().spec.as_mut().unwrap();
            spec.network.outbound = outbound;
            spec.network.allow_from = allow.iter().map(|a| n(a)).collect();
        };
        net(&mut all, "shop", false, &["friend"]);
        assert_eq!(peers_of(&all, &n("friend"), false), [Peer { app: n("shop"), outbound: false }]);
        assert!(peers_of(&all, &n("stranger"), true).is_empty());
        assert!(peers_of(&all, &n("shop"), false).is_empty());
        net(&mut all, "shop", true, &["friend"]);
        assert!(peers_of(&all, &n("friend"), false).is_empty(), "no way out through a peer");
        assert_eq!(peers_of(&all, &n("friend"), true), [Peer { app: n("shop"), outbound: true }]);
    }

    fn svc(name: &str, image: &str, replicas: u32) -> ServiceSpec {
        serde_json::from_value(serde_json::json!({"name": name, "image": image, "replicas": replicas})).unwrap()
    }

    fn desired(app: &str, generation: u64, services: Vec<ServiceSpec>) -> BTreeMap<Name, DesiredApp> {
        let placement = Placement { sites: String::new(), hosts: String::new() };
        let spec = AppSpec {
            name: n(app),
            tenant: n("default"),
            version: "1".into(),
            services,
            placement,
            rollout: None,
            network: Default::default(),
            bus: Default::default(),
        };
        let d = DesiredApp {
            site: n("s1"),
            app: n(app),
            generation,
            spec: Some(spec),
            orders: Default::default(),
            images: Default::default(),
        };
        BTreeMap::from([(n(app), d)])
    }

    /// Everything of `desired` assigned to host h1, as a single-host site's leader does.
    fn plan(desired: &BTreeMap<Name, DesiredApp>, observed: &[Observed]) -> Vec<Action> {
        let (wanted, held) = wanted(desired, &assign_all(desired), &n("h1"));
        super::plan(&wanted, &held, observed)
    }

    fn assign_all(desired: &BTreeMap<Name, DesiredApp>) -> BTreeMap<Name, Assignment> {
        desired
            .values()
            .filter_map(|d| {
                let spec = d.spec.as_ref()?;
                let replicas = spec
                    .services
                    .iter()
                    .flat_map(|s| {
                        (0..s.replicas).map(|r| Placed { service: s.name.clone(), replica: r, host: n("h1") })
                    })
                    .collect();
                let a = Assignment {
                    app: d.app.clone(),
                    generation: d.generation,
                    leader: n("h1"),
                    replicas,
                    unplaced: vec![],
                };
                Some((d.app.clone(), a))
            })
            .collect()
    }

    #[test]
    fn only_this_hosts_replicas_and_held_apps_are_untouched() {
        let web = svc("web", "img:1", 2);
        let d = desired("a", 1, vec![web.clone()]);
        let placed = |r, h: &str| Placed { service: web.name.clone(), replica: r, host: n(h) };
        let a = Assignment {
            app: n("a"),
            generation: 1,
            leader: n("h1"),
            replicas: vec![placed(0, "h1"), placed(1, "h2")],
            unplaced: vec![],
        };
        let (w, held) = wanted(&d, &BTreeMap::from([(n("a"), a)]), &n("h1"));
        assert_eq!(w.keys().map(|k| k.2).collect::<Vec<_>>(), [0]);
        let observed = [obs("c1", "a", &web, 0, "running"), obs("c2", "a", &web, 1, "running")];
        assert_eq!(super::plan(&w, &held, &observed), vec![Action::Remove { id: "c2".into() }]);
        // No assignment yet (a new leader has not written one): nothing is created or removed.
        let (w, held) = wanted(&d, &BTreeMap::new(), &n("h1"));
        assert!(super::plan(&w, &held, &observed).is_empty());
    }

    fn obs(id: &str, app: &str, s: &ServiceSpec, replica: u32, state: &str) -> Observed {
        Observed {
            id: id.into(),
            app: n(app),
            service: s.name.clone(),
            replica,
            generation: 1,
            digest: s.digest(),
            image: s.image.clone(),
            image_id: String::new(),
            state: state.into(),
            health: String::new(),
            networks: Default::default(),
        }
    }

    #[test]
    fn creates_what_is_missing() {
        let web = svc("web", "img:1", 2);
        let acts = plan(&desired("a", 1, vec![web]), &[]);
        assert_eq!(acts.len(), 2);
        assert!(acts.iter().all(|a| matches!(a, Action::Create(_))));
    }

    #[test]
    fn leaves_healthy_unchanged_containers_alone_even_on_new_generation() {
        let web = svc("web", "img:1", 1);
        let db = svc("db", "img:1", 1);
        let observed = [obs("c1", "a", &web, 0, "running"), obs("c2", "a", &db, 0, "running")];
        assert!(plan(&desired("a", 1, vec![web.clone(), db.clone()]), &observed).is_empty());
        // Generation 2 changes only db: web is untouched.
        let db2 = svc("db", "img:2", 1);
        let acts = plan(&desired("a", 2, vec![web, db2]), &observed);
        assert_eq!(acts.len(), 1);
        assert!(matches!(&acts[0], Action::Replace { old, .. } if old == "c2"));
    }

    #[test]
    fn restarts_crashed_and_removes_unwanted() {
        let web = svc("web", "img:1", 1);
        let observed = [
            obs("c1", "a", &web, 0, "exited"),
            obs("c9", "gone", &web, 0, "running"),
            obs("c3", "a", &web, 3, "running"),
        ];
        let acts = plan(&desired("a", 1, vec![web]), &observed);
        assert!(acts.contains(&Action::Start { id: "c1".into() }));
        assert!(acts.contains(&Action::Remove { id: "c9".into() }));
        assert!(acts.contains(&Action::Remove { id: "c3".into() }));
        assert_eq!(acts.len(), 3);
    }

    #[test]
    fn tombstone_removes_everything_and_duplicates_keep_the_healthy_one() {
        let web = svc("web", "img:1", 1);
        let mut d = desired("a", 3, vec![web.clone()]);
        let observed = [obs("c1", "a", &web, 0, "exited"), obs("c2", "a", &web, 0, "running")];
        assert_eq!(plan(&d, &observed), vec![Action::Remove { id: "c1".into() }]);
        d.get_mut(&n("a")).unwrap().spec = None;
        assert_eq!(plan(&d, &observed).len(), 2);
    }
}
