//! The fleet as Prometheus metrics: a snapshot of what the hub knows, rendered in the text
//! exposition format. Labels are bounded: per site (at most the configured number of sites),
//! per app, and per service endpoint; never per container or per (app, site) pair.

use std::fmt::Write;

/// One site's figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SiteRow {
    pub site: String,
    pub connected: bool,
    /// Seconds since its last heartbeat; `None` if none was seen.
    pub last_seen_secs: Option<f64>,
    pub buffer_fill: f64,
    pub buffer_messages: u64,
    pub buffer_full: bool,
    pub events_refused: u64,
    /// Events the hub has not copied from the site yet (its source's lag).
    pub catchup_lag: u64,
    pub leaf_recoveries: u64,
    pub secrets_refused: u64,
    pub apps_desired: u64,
    pub apps_running: u64,
    pub apps_failed: u64,
    /// Restarts of the site's containers, as its latest reports count them.
    pub restarts: u64,
    /// Container exits and OOM kills the site reported since telemetry started.
    pub exits: u64,
    pub ooms: u64,
    /// Containers whose probe fails, as last reported.
    pub unhealthy: u64,
    /// The site's telemetry buffer: fill 0 to 1, and whether it drops its oldest samples.
    pub telemetry_fill: f64,
    pub telemetry_full: bool,
    /// The apps' topics at the site at least half full, fullest first.
    pub topics: Vec<edge_types::site::TopicFill>,
}

/// One host's latest resource sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostRow {
    pub site: String,
    pub host: String,
    pub cpu_ratio: f64,
    pub memory_total: u64,
    pub memory_available: u64,
    pub disk_free: u64,
    pub sample_age_secs: f64,
}

/// One application's figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppRow {
    pub app: String,
    pub generation: u64,
    pub sites_desired: u64,
    pub sites_running: u64,
    pub sites_failed: u64,
    /// Restarts of the app's containers at its sites, as last reported.
    pub restarts: u64,
    /// CPU cores and memory its containers use, from the sites' latest samples.
    pub cpu_cores: f64,
    pub memory_bytes: u64,
    pub ooms: u64,
    /// The app's containers failing their probe, as last reported.
    pub unhealthy: u64,
}

/// One endpoint of a service, from its `$SRV.STATS` (summed over its instances).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointRow {
    pub service: String,
    pub endpoint: String,
    pub requests: u64,
    pub errors: u64,
    pub processing_secs: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub sites: Vec<SiteRow>,
    pub hosts: Vec<HostRow>,
    pub apps: Vec<AppRow>,
    pub endpoints: Vec<EndpointRow>,
    /// Sites registered beyond the per-site series limit (counted in the totals only).
    pub sites_over_limit: u64,
    pub sites_registered: u64,
    pub sites_connected: u64,
    /// Registered sites per site-manager version (every site, over the series limit or not).
    pub sites_by_version: std::collections::BTreeMap<String, u64>,
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", esc(v))).collect();
            let _ = write!(self.0, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
    fn per_site(&mut self, s: &Snapshot, name: &str, kind: &str, help: &str, f: impl Fn(&SiteRow) -> f64) {
        self.family(name, kind, help);
        for r in &s.sites {
            self.sample(name, &[("site", &r.site)], f(r));
        }
    }
    fn per_app(&mut self, s: &Snapshot, name: &str, help: &str, f: impl Fn(&AppRow) -> f64) {
        self.family(name, "gauge", help);
        for r in &s.apps {
            self.sample(name, &[("app", &r.app)], f(r));
        }
    }
    fn per_endpoint(&mut self, s: &Snapshot, name: &str, help: &str, f: impl Fn(&EndpointRow) -> f64) {
        self.family(name, "counter", help);
        for r in &s.endpoints {
            self.sample(name, &[("service", &r.service), ("endpoint", &r.endpoint)], f(r));
        }
    }
}

fn flag(v: bool) -> f64 {
    if v {
        1.0
    } else {
        0.0
    }
}

type SiteSeries = (&'static str, &'static str, &'static str, fn(&SiteRow) -> f64);

/// Every per-site series: name, type, help, value.
const SITE_SERIES: [SiteSeries; 18] = [
    ("edge_site_telemetry_buffer_fill_ratio", "gauge", "Fill of the site's telemetry buffer, 0 to 1.", |r| {
        r.telemetry_fill
    }),
    ("edge_site_telemetry_buffer_full", "gauge", "1 while the site drops its oldest telemetry samples.", |r| {
        flag(r.telemetry_full)
    }),
    ("edge_site_containers_unhealthy", "gauge", "Containers failing their probe.", |r| r.unhealthy as f64),
    ("edge_site_container_exits_total", "counter", "Container exits the site reported.", |r| r.exits as f64),
    ("edge_site_container_ooms_total", "counter", "Containers the site's kernels killed for memory.", |r| {
        r.ooms as f64
    }),
    ("edge_site_connected", "gauge", "1 while the site's heartbeats arrive.", |r| flag(r.connected)),
    ("edge_site_last_heartbeat_age_seconds", "gauge", "Seconds since the site's last heartbeat.", |r| {
        r.last_seen_secs.unwrap_or(0.0)
    }),
    ("edge_site_buffer_fill_ratio", "gauge", "Fill of the site's event buffer, 0 to 1.", |r| r.buffer_fill),
    ("edge_site_buffer_messages", "gauge", "Events the site holds for the hub.", |r| r.buffer_messages as f64),
    ("edge_site_buffer_full", "gauge", "1 while the site's buffer refuses events.", |r| flag(r.buffer_full)),
    ("edge_site_events_refused_total", "counter", "Events the site's full buffer refused.", |r| {
        r.events_refused as f64
    }),
    ("edge_site_catchup_lag_messages", "gauge", "Site events not yet copied to the hub.", |r| r.catchup_lag as f64),
    ("edge_site_leaf_recoveries_total", "counter", "Restarts of the site's stuck leaf server.", |r| {
        r.leaf_recoveries as f64
    }),
    ("edge_site_secrets_refused_total", "counter", "Sealed secrets the site refused.", |r| r.secrets_refused as f64),
    ("edge_site_apps_desired", "gauge", "Applications placed at the site.", |r| r.apps_desired as f64),
    ("edge_site_apps_running", "gauge", "Applications running at the site at their target generation.", |r| {
        r.apps_running as f64
    }),
    ("edge_site_apps_failed", "gauge", "Applications failed at the site.", |r| r.apps_failed as f64),
    ("edge_site_container_restarts", "gauge", "Restarts of the site's containers, as last reported.", |r| {
        r.restarts as f64
    }),
];

/// The text exposition of a snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::new());
    o.family("edge_sites_registered", "gauge", "Sites registered with the hub.");
    o.sample("edge_sites_registered", &[], s.sites_registered as f64);
    o.family("edge_sites_connected", "gauge", "Sites whose heartbeats arrive.");
    o.sample("edge_sites_connected", &[], s.sites_connected as f64);
    o.family("edge_sites_over_series_limit", "gauge", "Sites beyond the per-site series limit, in totals only.");
    o.sample("edge_sites_over_series_limit", &[], s.sites_over_limit as f64);
    o.family("edge_sites_by_version", "gauge", "Registered sites per site-manager version.");
    for (version, n) in &s.sites_by_version {
        o.sample("edge_sites_by_version", &[("version", version)], *n as f64);
    }
    for (name, kind, help, f) in SITE_SERIES {
        if name == "edge_site_last_heartbeat_age_seconds" {
            // Only for sites heard from.
            o.family(name, kind, help);
            for r in s.sites.iter().filter(|r| r.last_seen_secs.is_some()) {
                o.sample(name, &[("site", &r.site)], f(r));
            }
        } else {
            o.per_site(s, name, kind, help, f);
        }
    }
    o.per_app(s, "edge_app_generation", "The application's current generation.", |r| r.generation as f64);
    o.per_app(s, "edge_app_sites_desired", "Sites the application is placed at.", |r| r.sites_desired as f64);
    o.per_app(s, "edge_app_sites_running", "Sites running the application.", |r| r.sites_running as f64);
    o.per_app(s, "edge_app_sites_failed", "Sites where the application failed.", |r| r.sites_failed as f64);
    o.per_app(s, "edge_app_container_restarts", "Restarts of the app's containers, as last reported.", |r| {
        r.restarts as f64
    });
    type HostSeries = (&'static str, &'static str, fn(&HostRow) -> f64);
    let host_series: [HostSeries; 5] = [
        ("edge_host_cpu_ratio", "Busy share of the host's CPUs, 0 to 1.", |r| r.cpu_ratio),
        ("edge_host_memory_total_bytes", "The host's memory.", |r| r.memory_total as f64),
        ("edge_host_memory_available_bytes", "Memory available on the host.", |r| r.memory_available as f64),
        ("edge_host_disk_free_bytes", "Free disk where Docker keeps its data.", |r| r.disk_free as f64),
        ("edge_host_sample_age_seconds", "Age of the host's latest sample.", |r| r.sample_age_secs),
    ];
    for (name, help, f) in host_series {
        o.family(name, "gauge", help);
        for r in &s.hosts {
            o.sample(name, &[("site", &r.site), ("host", &r.host)], f(r));
        }
    }
    o.per_app(s, "edge_app_containers_unhealthy", "The app's containers failing their probe.", |r| r.unhealthy as f64);
    o.per_app(s, "edge_app_cpu_cores", "CPU cores the app's containers use.", |r| r.cpu_cores);
    o.per_app(s, "edge_app_memory_bytes", "Memory the app's containers use.", |r| r.memory_bytes as f64);
    o.per_app(s, "edge_app_container_ooms", "The app's containers killed for memory since telemetry started.", |r| {
        r.ooms as f64
    });
    o.per_endpoint(s, "edge_service_requests_total", "Requests a service endpoint handled.", |r| r.requests as f64);
    o.per_endpoint(
        s,
        "edge_service_request_errors_total",
        "Requests a service endpoint answered with an error.",
        |r| r.errors as f64,
    );
    o.per_endpoint(
        s,
        "edge_service_request_duration_seconds_total",
        "Time a service endpoint spent on requests.",
        |r| r.processing_secs,
    );
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_exposition_format() {
        let s = Snapshot {
            sites: vec![SiteRow {
                site: "shop-1".into(),
                connected: true,
                last_seen_secs: Some(1.5),
                apps_desired: 2,
                apps_running: 1,
                ..Default::default()
            }],
            apps: vec![AppRow {
                app: "web".into(),
                generation: 3,
                sites_desired: 1,
                sites_running: 1,
                sites_failed: 0,
                ..Default::default()
            }],
            endpoints: vec![EndpointRow {
                service: "scheduler".into(),
                endpoint: "app-apply".into(),
                requests: 7,
                errors: 1,
                processing_secs: 0.25,
            }],
            sites_registered: 1,
            sites_connected: 1,
            sites_by_version: [("0.1.0".to_string(), 1)].into(),
            ..Default::default()
        };
        let text = render(&s);
        assert!(text.contains("edge_sites_by_version{version=\"0.1.0\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE edge_sites_connected gauge\nedge_sites_connected 1\n"), "{text}");
        assert!(text.contains("edge_site_apps_running{site=\"shop-1\"} 1\n"));
        assert!(text.contains("edge_site_last_heartbeat_age_seconds{site=\"shop-1\"} 1.5\n"));
        assert!(text.contains("edge_app_sites_desired{app=\"web\"} 1\n"));
        assert!(text.contains("edge_service_request_errors_total{service=\"scheduler\",endpoint=\"app-apply\"} 1\n"));
        // Every sample line belongs to a family declared before it.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(declared.contains(name), "{name} has no TYPE line");
            }
        }
        assert_eq!(esc("a\"b\\c"), "a\\\"b\\\\c");
    }
}
