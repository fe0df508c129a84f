//! The placement policy of an application, compiled from its spec: which sites may run it and,
//! within a site, which hosts, and whether a host is big enough for its containers. Pure: the
//! scheduler uses it fleet-wide, the site's leader host-by-host, the preview to explain.

use std::collections::BTreeMap;

use crate::app::{AppSpec, Mode, Placement, ServiceSpec, SpecError};
use crate::selector::{LabelOrders, Selector};
use crate::site::{HostInventory, SiteRecord};
use crate::Name;

/// Site and host selectors of an application.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub sites: Selector,
    pub hosts: Selector,
}

/// Why a host can or cannot take an application.
#[derive(Clone, Debug, PartialEq)]
pub struct HostFit {
    pub host: Name,
    /// The host selector's failing terms.
    pub unmatched: Vec<String>,
    /// Per service: why the host is too small for one of its containers (absent: it fits).
    pub short: BTreeMap<Name, String>,
}

impl HostFit {
    /// Matches the selector and is big enough for at least one service.
    pub fn usable(&self, services: usize) -> bool {
        self.unmatched.is_empty() && self.short.len() < services
    }

    /// Every reason, for the preview.
    pub fn reasons(&self) -> Vec<String> {
        let mut r = self.unmatched.clone();
        r.extend(self.short.iter().map(|(svc, why)| format!("service {svc}: {why}")));
        r
    }
}

/// The preview of one site: selected or not, why, and each host's fit.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteFit {
    pub selected: bool,
    pub reasons: Vec<String>,
    pub hosts: Vec<HostFit>,
}

impl Policy {
    /// Parses both selectors and rejects one that contradicts itself.
    pub fn parse(p: &Placement) -> Result<Self, SpecError> {
        let one = |field: &str, text: &str| {
            let pointer = format!("/placement/{field}");
            let sel = Selector::parse(text).map_err(|e| SpecError {
                pointer: pointer.clone(),
                message: format!("invalid selector {text:?} {e}"),
            })?;
            contradiction(&pointer, &sel, &LabelOrders::default())?;
            Ok::<_, SpecError>(sel)
        };
        Ok(Self { sites: one("sites", &p.sites)?, hosts: one("hosts", &p.hosts)? })
    }

    /// Checks that every comparison has a meaning under the declared orders and that no
    /// selector is unsatisfiable under them.
    pub fn check_orders(&self, orders: &LabelOrders) -> Result<(), SpecError> {
        for (field, sel) in [("sites", &self.sites), ("hosts", &self.hosts)] {
            let pointer = format!("/placement/{field}");
            sel.check_orders(orders).map_err(|message| SpecError { pointer: pointer.clone(), message })?;
            contradiction(&pointer, sel, orders)?;
        }
        Ok(())
    }

    /// The declared orders the host selector compares by: they travel with the desired state, so
    /// the site's leader decides with the same orders as the hub.
    pub fn host_orders(&self, orders: &LabelOrders) -> LabelOrders {
        orders.subset(self.hosts.terms().iter().map(|t| t.key()))
    }

    /// How `host` fits `spec`: the selector's failing terms and, per service, a capacity shortfall.
    pub fn host_fit(&self, spec: &AppSpec, host: &HostInventory, orders: &LabelOrders) -> HostFit {
        let unmatched = if self.hosts.terms().is_empty() {
            Vec::new() // no host selector: skip building the host's attributes
        } else {
            self.hosts.explain_for("host", &host.attributes(), orders)
        };
        let short = spec.services.iter().filter_map(|s| shortfall(s, host).map(|why| (s.name.clone(), why))).collect();
        HostFit { host: host.host.clone(), unmatched, short }
    }

    /// Whether the site is selected: its labels match, and every service has enough hosts that
    /// match and are big enough.
    pub fn selects(&self, spec: &AppSpec, site: &SiteRecord, orders: &LabelOrders) -> bool {
        self.sites.matches_in(&site.effective_labels(), orders) && self.hosts_fit(spec, site, orders)
    }

    /// The host half of [`Policy::selects`], for a caller that has matched the site's labels
    /// already (with labels it merged once for many apps).
    pub fn hosts_fit(&self, spec: &AppSpec, site: &SiteRecord, orders: &LabelOrders) -> bool {
        if self.hosts.terms().is_empty() && !spec.services.iter().any(needs_capacity) {
            return true; // the common case: no host constraint at all
        }
        if self.hosts.terms().is_empty() && !spec.services.iter().any(|s| s.anti_affinity) {
            // Sizes only: some host big enough for each service, without building reasons.
            let fits = |s: &ServiceSpec| site.hosts.iter().any(|h| shortfall(s, h).is_none());
            return !site.hosts.is_empty() && spec.services.iter().all(fits);
        }
        let fits: Vec<HostFit> = site.hosts.iter().map(|h| self.host_fit(spec, h, orders)).collect();
        service_gaps(spec, &fits).is_empty()
    }

    /// The preview of one site.
    pub fn explain(&self, spec: &AppSpec, site: &SiteRecord, orders: &LabelOrders) -> SiteFit {
        let mut reasons = self.sites.explain(&site.effective_labels(), orders);
        let hosts: Vec<HostFit> = site.hosts.iter().map(|h| self.host_fit(spec, h, orders)).collect();
        if reasons.is_empty() {
            reasons = service_gaps(spec, &hosts);
        }
        SiteFit { selected: reasons.is_empty(), reasons, hosts }
    }
}

fn contradiction(pointer: &str, sel: &Selector, orders: &LabelOrders) -> Result<(), SpecError> {
    match sel.contradictions(orders).into_iter().next() {
        Some(message) => {
            Err(SpecError { pointer: pointer.into(), message: format!("contradictory selector: {message}") })
        }
        None => Ok(()),
    }
}

fn needs_capacity(s: &ServiceSpec) -> bool {
    let r = &s.resources;
    r.cpus.is_some() || r.memory_mb.is_some() || r.gpus.is_some() || s.anti_affinity || !s.devices.is_empty()
}

/// For each service that cannot run at the site: why (no host matches and fits, or too few for
/// replicas that must not share a host).
fn service_gaps(spec: &AppSpec, fits: &[HostFit]) -> Vec<String> {
    let mut gaps = Vec::new();
    if fits.is_empty() {
        return vec!["the site reported no hosts".into()];
    }
    for s in &spec.services {
        let usable = fits.iter().filter(|f| f.unmatched.is_empty() && !f.short.contains_key(&s.name)).count();
        let matched = fits.iter().filter(|f| f.unmatched.is_empty()).count();
        if usable == 0 {
            gaps.push(if matched == 0 {
                format!("service {}: none of the site's {} hosts matches the host selector", s.name, fits.len())
            } else {
                format!("service {}: none of the {matched} matching hosts is big enough", s.name)
            });
        } else if s.mode == Mode::Replicated && s.anti_affinity && (usable as u32) < s.replicas {
            gaps.push(format!(
                "service {}: {} replicas must not share a host, but only {usable} hosts fit",
                s.name, s.replicas
            ));
        }
    }
    gaps
}

/// Why one container of `svc` cannot run on `host` even when it is empty. Unknown capacity (0)
/// never excludes.
pub fn shortfall(svc: &ServiceSpec, host: &HostInventory) -> Option<String> {
    let r = &svc.resources;
    if let Some(cpus) = r.cpus {
        if host.cpus > 0 && cpus > host.cpus as f64 {
            return Some(format!("needs {cpus} CPUs, the host has {}", host.cpus));
        }
    }
    if let Some(mb) = r.memory_mb {
        let have = host.memory_bytes / (1024 * 1024);
        if host.memory_bytes > 0 && mb > have {
            return Some(format!("needs {mb} MiB of memory, the host has {have} MiB"));
        }
    }
    if let Some(gpus) = r.gpus {
        let have = host.gpu_count();
        if gpus > have {
            return Some(format!("needs {gpus} GPUs, the host has {have}"));
        }
    }
    for kind in &svc.devices {
        if host.device_nodes(*kind).is_empty() {
            let what = match kind {
                crate::app::DeviceKind::Camera => "a camera device (/dev/video*)",
                crate::app::DeviceKind::Gpu => "a GPU device node",
            };
            return Some(format!("needs {what}, the host has none"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::LabelValue;

    fn host(name: &str, cpus: u32, labels: &[(&str, &str)], devices: &[&str]) -> HostInventory {
        HostInventory {
            host: Name::new(name).unwrap(),
            arch: "amd64".into(),
            os: "linux".into(),
            cpus,
            memory_bytes: 8 << 30,
            disk_bytes: 100 << 30,
            gpus: vec![],
            devices: devices.iter().map(|d| d.to_string()).collect(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), LabelValue(v.to_string()))).collect(),
        }
    }

    fn site(labels: &[(&str, &str)], hosts: Vec<HostInventory>) -> SiteRecord {
        SiteRecord {
            site: Name::new("s1").unwrap(),
            reported_labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            labels: Default::default(),
            hosts,
            agent_version: "t".into(),
            registered_at_ms: 0,
            public_key: None,
            duplicate_hosts: Vec::new(),
        }
    }

    fn spec(sites: &str, hosts: &str, extra: serde_json::Value) -> AppSpec {
        let mut svc = serde_json::json!({"name": "cam", "image": "x:1"});
        svc.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(serde_json::json!({
            "name": "a", "version": "1", "services": [svc],
            "placement": {"sites": sites, "hosts": hosts}
        }))
        .unwrap()
    }

    #[test]
    fn the_briefs_example_is_one_line() {
        let orders = LabelOrders::parse("size=small<medium<large").unwrap();
        let app = spec("customer = acme", "size >= medium, camera", serde_json::json!({}));
        let policy = app.check().unwrap();
        policy.check_orders(&orders).unwrap();
        let good = site(&[("customer", "acme")], vec![host("h1", 4, &[("size", "large")], &["/dev/video0"])]);
        let no_camera = site(&[("customer", "acme")], vec![host("h1", 4, &[("size", "large")], &[])]);
        let small = site(&[("customer", "acme")], vec![host("h1", 4, &[("size", "small")], &["/dev/video0"])]);
        let other = site(&[("customer", "globex")], good.hosts.clone());
        assert!(policy.selects(&app, &good, &orders));
        for s in [&no_camera, &small, &other] {
            assert!(!policy.selects(&app, s, &orders));
        }
        let why = policy.explain(&app, &no_camera, &orders);
        assert!(why.reasons[0].contains("none of the site's 1 hosts"), "{why:?}");
        assert!(why.hosts[0].unmatched[0].contains("`camera` fails: the host has no label camera"), "{why:?}");
        // A label declares what detection cannot see (an IP camera).
        let declared = site(&[("customer", "acme")], vec![host("h1", 4, &[("size", "medium"), ("camera", "1")], &[])]);
        assert!(policy.selects(&app, &declared, &orders));
    }

    #[test]
    fn capacity_and_anti_affinity_exclude_with_reasons() {
        let orders = LabelOrders::default();
        let big = spec("", "", serde_json::json!({"resources": {"cpus": 8.0}}));
        let s = site(&[], vec![host("h1", 4, &[], &[]), host("h2", 16, &[], &[])]);
        let p = big.check().unwrap();
        assert!(p.selects(&big, &s, &orders));
        let fit = p.explain(&big, &s, &orders);
        assert_eq!(fit.hosts[0].reasons(), ["service cam: needs 8 CPUs, the host has 4"]);
        let spread = spec("", "", serde_json::json!({"replicas": 3, "anti_affinity": true}));
        let p = spread.check().unwrap();
        assert!(!p.selects(&spread, &s, &orders));
        assert!(p.explain(&spread, &s, &orders).reasons[0].contains("only 2 hosts fit"));
        let gpu = spec("", "gpu", serde_json::json!({"resources": {"gpus": 1}}));
        assert!(!gpu.check().unwrap().selects(&gpu, &s, &orders));
        // A container that needs the camera device runs only where a /dev/video* node exists
        // (a `camera` label alone, for an IP camera, does not give it one).
        let cam = spec("", "", serde_json::json!({"devices": ["camera"]}));
        let labelled = site(&[], vec![host("h1", 4, &[("camera", "1")], &[])]);
        assert!(!cam.check().unwrap().selects(&cam, &labelled, &orders));
        let wired = site(&[], vec![host("h1", 4, &[], &["/dev/video0"])]);
        assert!(cam.check().unwrap().selects(&cam, &wired, &orders));
        assert!(cam.check().unwrap().explain(&cam, &labelled, &orders).hosts[0].reasons()[0].contains("camera device"));
    }

    #[test]
    fn contradictions_and_bad_modes_are_rejected_with_the_field() {
        let e = spec("a = x, a = y", "", serde_json::json!({})).check().unwrap_err();
        assert_eq!(e.pointer, "/placement/sites");
        assert!(e.message.contains("contradictory"), "{e}");
        let e = spec("", "cpus > 8, cpus < 2", serde_json::json!({})).check().unwrap_err();
        assert_eq!(e.pointer, "/placement/hosts");
        let e = spec("", "", serde_json::json!({"mode": "one-per-matching-host", "replicas": 2})).check().unwrap_err();
        assert_eq!(e.pointer, "/services/0/replicas");
        let ok = spec("", "", serde_json::json!({"replicas": 2, "anti_affinity": true, "ports": [{"container": 80}]}));
        assert!(ok.check().is_ok());
        let e = spec("", "", serde_json::json!({"replicas": 2, "ports": [{"container": 80}]})).check().unwrap_err();
        assert_eq!(e.pointer, "/services/0/ports/0");
        let e = spec("", "!gpu", serde_json::json!({"resources": {"gpus": 1}})).check().unwrap_err();
        assert_eq!(e.pointer, "/services/0/resources/gpus");
        assert!(spec("", "gpu >= 2", serde_json::json!({"resources": {"gpus": 1}})).check().is_ok());
        let orders = LabelOrders::parse("size=small<medium<large").unwrap();
        let p = spec("", "size > large", serde_json::json!({})).check().unwrap();
        assert!(p.check_orders(&orders).unwrap_err().message.contains("can never hold"));
    }
}
