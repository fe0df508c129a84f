//! Configuration of a site-manager, from flags or `SITE_MANAGER_*` environment variables.
//! Bad configuration fails here, before any connection is made.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use edge_bus::topology::SiteStreamLimits;
use edge_types::site::LabelValue;
use edge_types::Name;

/// site-manager: runs one site's (or one host's) share of the applications placed there.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "site-manager", version)]
pub struct Config {
    /// URL of the site's own leaf NATS server.
    #[arg(long, env = "SITE_MANAGER_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Credentials file (user JWT and nkey seed) to connect with, issued by the authority
    /// (`edgectl auth`); the file is read, never logged.
    #[arg(long, env = "SITE_MANAGER_NATS_CREDS")]
    pub nats_creds: Option<std::path::PathBuf>,
    /// Site id: a lower-case DNS label; also the site leaf's JetStream domain.
    #[arg(long, env = "SITE_MANAGER_SITE", value_parser = parse_site)]
    pub site: Name,
    /// Host id within the site; defaults to the machine's host name.
    #[arg(long, env = "SITE_MANAGER_HOST", value_parser = parse_name)]
    pub host: Option<Name>,
    /// Site labels reported at call-home, as `key=value`, comma separated or repeated.
    #[arg(long = "label", env = "SITE_MANAGER_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, LabelValue)>,
    /// Labels of this host, for host selectors (`size=large`, `camera=1` for a camera detection
    /// cannot see), as `key=value`, comma separated or repeated. They override detected facts.
    #[arg(long = "host-label", env = "SITE_MANAGER_HOST_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub host_labels: Vec<(String, LabelValue)>,
    /// Seconds the site's leader lease lasts: a dead leader is replaced within about this long.
    #[arg(long, env = "SITE_MANAGER_LEASE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub lease_secs: u64,
    /// Seconds without a beat after which the leader presumes a host down and moves its
    /// replicas to other hosts (hosts beat every `--heartbeat-secs`).
    #[arg(long, env = "SITE_MANAGER_HOST_DEAD_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..=86400))]
    pub host_dead_secs: u64,
    /// Daily maintenance window on the site's clock, `HH:MM-HH:MM` (may cross midnight).
    /// Outside it, updates that would replace running containers wait; absent: always open.
    #[arg(long, env = "SITE_MANAGER_MAINTENANCE_WINDOW", value_parser = parse_window)]
    pub maintenance_window: Option<String>,
    /// The site clock's offset from UTC for the maintenance window, `+HH:MM` or `-HH:MM`.
    #[arg(long, env = "SITE_MANAGER_UTC_OFFSET", default_value = "+00:00", allow_hyphen_values = true)]
    pub utc_offset: String,
    /// Seconds between full reconciles (a safety net; Docker events and desired-state changes
    /// trigger a reconcile at once).
    #[arg(long, env = "SITE_MANAGER_RESYNC_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub resync_secs: u64,
    /// Seconds after which the leader registers the site again even if nothing changed, so
    /// that the hub converges on the site's view whatever arrived out of order (a second
    /// machine that led under the same host name and registered last before it left).
    #[arg(long, env = "SITE_MANAGER_REGISTER_REFRESH_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub register_refresh_secs: u64,
    /// Seconds between heartbeats to the hub.
    #[arg(long, env = "SITE_MANAGER_HEARTBEAT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_secs: u64,
    /// Most bytes of events the site buffers for the hub; when full, new events are refused,
    /// counted and raise an alarm (old ones are never dropped).
    #[arg(long, env = "SITE_MANAGER_EVENTS_MAX_BYTES", default_value_t = 1 << 30, value_parser = clap::value_parser!(i64).range(4096..))]
    pub events_max_bytes: i64,
    /// `host:port` of the hub's leafnode listener as this site reaches it; with
    /// `--leaf-restart-cmd`, enables recovery of a leaf server that stopped reconnecting.
    #[arg(long, env = "SITE_MANAGER_HUB_PROBE_ADDR")]
    pub hub_probe_addr: Option<String>,
    /// Shell command that restarts the site's leaf server, run when the leaf has not linked to a
    /// reachable hub for `--leaf-stuck-secs`.
    #[arg(long, env = "SITE_MANAGER_LEAF_RESTART_CMD")]
    pub leaf_restart_cmd: Option<String>,
    /// The site's leaf-link credentials file, as its leaf server reads it (`leaf.creds` of the
    /// bundle; nats-server reads it again on every connect). With `--hub-url` and
    /// `--enrol-creds`, the site's leader renews it before it expires, and after, when the
    /// site comes back from a long time offline.
    #[arg(long, env = "SITE_MANAGER_LEAF_CREDS")]
    pub leaf_creds: Option<PathBuf>,
    /// A read-only copy of the leaf-link credential (a Kubernetes Secret's): copied to
    /// `--leaf-creds` when that is missing or older (issued earlier), so a credential the
    /// operator re-issued by hand (`edgectl site renew`) still reaches the leaf server.
    #[arg(long, env = "SITE_MANAGER_LEAF_CREDS_FROM")]
    pub leaf_creds_from: Option<PathBuf>,
    /// Only keep the leaf-link credential valid (renewals and the site's join): no containers,
    /// no connection to the leaf server. For a sidecar next to the leaf server (Kubernetes,
    /// `k8s/site/leaf.yaml`), where the file the leaf server reads is in the pod's volume.
    #[arg(long, env = "SITE_MANAGER_RENEW_ONLY", default_value_t = false)]
    pub renew_only: bool,
    /// The hub's client URL as this site reaches it, for renewals only.
    #[arg(long, env = "SITE_MANAGER_HUB_URL")]
    pub hub_url: Option<String>,
    /// The authority's CA certificate (`ca.pem` of the bundle): renewals and joins then reach the
    /// hub's client port over TLS only, verifying the hub's certificate for the name dialled.
    #[arg(long, env = "SITE_MANAGER_HUB_CA")]
    pub hub_ca: Option<PathBuf>,
    /// The shared enrolment credential (`enrol.creds` of the bundle): may only ask for renewals.
    #[arg(long, env = "SITE_MANAGER_ENROL_CREDS")]
    pub enrol_creds: Option<PathBuf>,
    /// The invitation's one-time token file (`token` of a bundle made by `edgectl site add
    /// SITE --join`): a site without a leaf credential joins with it (its leader makes the
    /// leaf-link key) and receives the credential once approved.
    #[arg(long, env = "SITE_MANAGER_JOIN_TOKEN")]
    pub join_token: Option<PathBuf>,
    /// A host's one-time token file (`token` of `edgectl host invite SITE HOST`): a host with
    /// no credential at `--nats-creds` yet joins with it (it makes its own key) through the hub
    /// (`--hub-url`, `--enrol-creds`) and, once approved, writes its credential there.
    #[arg(long, env = "SITE_MANAGER_HOST_TOKEN")]
    pub host_token: Option<PathBuf>,
    /// The site's system user (`sys.creds` of the bundle): with it the site's leader gives the
    /// leaf server the site account's JWT when the centre revokes a host's credential.
    #[arg(long, env = "SITE_MANAGER_SYS_CREDS")]
    pub sys_creds: Option<PathBuf>,
    /// Seconds between checks of the leaf-link credential's expiry.
    #[arg(long, env = "SITE_MANAGER_RENEW_CHECK_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub renew_check_secs: u64,
    /// Seconds the leaf may stay unlinked while the hub answers a direct probe.
    #[arg(long, env = "SITE_MANAGER_LEAF_STUCK_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub leaf_stuck_secs: u64,
    /// Most events the site buffers for the hub; -1 (or 0) for no limit.
    #[arg(long, env = "SITE_MANAGER_EVENTS_MAX_MSGS", default_value_t = -1, value_parser = clap::value_parser!(i64).range(-1..))]
    pub events_max_msgs: i64,
    /// Directory of this host's private key (`<site>-<host>.xk`, mode 0600), created at first
    /// start. Secrets reach the site sealed to the site key, which the hosts share sealed to
    /// each host's key.
    #[arg(long, env = "SITE_MANAGER_KEY_DIR", default_value = "/var/lib/edge/site-manager")]
    pub key_dir: PathBuf,
    /// Where containers' secret files are written, one directory per container, mounted at
    /// `/run/secrets`. Must be a tmpfs, so secrets never reach a disk.
    #[arg(long, env = "SITE_MANAGER_SECRETS_DIR", default_value = "/dev/shm/edge-secrets")]
    pub secrets_dir: PathBuf,
    /// Memory limit in MiB of containers whose spec sets none (every container gets a limit);
    /// 0: no limit.
    #[arg(long, env = "SITE_MANAGER_DEFAULT_MEMORY_MB", default_value_t = 1024)]
    pub default_memory_mb: u64,
    /// Seconds between resource samples of this host and its containers.
    #[arg(long, env = "SITE_MANAGER_STATS_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stats_secs: u64,
    /// Most bytes of telemetry the site keeps (oldest samples go first; a day at most).
    #[arg(long, env = "SITE_MANAGER_TELEMETRY_MAX_BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(i64).range(4096..))]
    pub telemetry_max_bytes: i64,
    /// The secrets service's public key (`edgectl secret key` shows it): when set, only
    /// secrets sealed by it are opened.
    #[arg(long, env = "SITE_MANAGER_SECRETS_SENDER")]
    pub secrets_sender: Option<String>,
    /// Most bytes of images the site's store keeps (set when the store is created).
    #[arg(long, env = "SITE_MANAGER_IMAGES_MAX_BYTES", default_value_t = 8 << 30, value_parser = clap::value_parser!(i64).range(1 << 20..))]
    pub images_max_bytes: i64,
    /// Seconds an image from the site's store that no app needs stays in Docker before it is
    /// removed (0: never; a dev stack whose sites share one Docker Engine should use 0).
    #[arg(long, env = "SITE_MANAGER_IMAGE_GC_SECS", default_value_t = 86_400)]
    pub image_gc_secs: u64,
    /// The IPv4 /16 each app's Docker network at this host takes a /24 subnet from (pick one
    /// that the site's LAN does not use).
    #[arg(long, env = "SITE_MANAGER_NETWORK_POOL", default_value = "10.213.0.0/16")]
    pub network_pool: crate::network::Pool,
    /// The site's key for its applications' bus credentials (`apps.signer.seed` of the
    /// bundle). Default: that file beside `--nats-creds`, if it is there; without it, apps
    /// that ask for the bus cannot run on this host.
    #[arg(long, env = "SITE_MANAGER_APPS_SIGNER")]
    pub apps_signer: Option<PathBuf>,
    /// The port apps reach the site's bus on, at their network's gateway address.
    #[arg(long, env = "SITE_MANAGER_APP_BUS_PORT", default_value_t = 4229)]
    pub app_bus_port: u16,
    /// The site-manager runs in a container of the Docker Engine it drives: it joins each app
    /// network that needs the bus (as `edge-bus`) and relays there, instead of listening on the
    /// network's gateway in the host's namespace.
    #[arg(long, env = "SITE_MANAGER_APP_BUS_JOIN", default_value_t = false)]
    pub app_bus_join: bool,
}

impl Config {
    /// The hub's client port as this site reaches it for renewals and joins: with the shared
    /// enrolment credential, over TLS when given the CA; `None` without a hub URL or credential.
    pub fn hub_enrolment(&self) -> Option<edge_bus::Endpoint> {
        let (url, enrol) = (self.hub_url.as_ref()?, self.enrol_creds.clone()?);
        Some(edge_bus::Endpoint::new(url, Some(enrol)).with_tls_ca(self.hub_ca.clone()))
    }

    /// The apps' signing key: `--apps-signer`, else `apps.signer.seed` beside the credentials.
    pub fn apps_signer(&self) -> Option<PathBuf> {
        self.apps_signer.clone().or_else(|| {
            let beside = self.nats_creds.as_ref()?.parent()?.join("apps.signer.seed");
            beside.exists().then_some(beside)
        })
    }

    /// A configuration with defaults for everything but the site and its connection.
    pub fn new(site: Name, nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            nats_creds: None,
            site,
            host: None,
            labels: Vec::new(),
            host_labels: Vec::new(),
            lease_secs: 10,
            host_dead_secs: 20,
            maintenance_window: None,
            utc_offset: "+00:00".into(),
            resync_secs: 10,
            register_refresh_secs: 300,
            heartbeat_secs: 5,
            events_max_bytes: 1 << 30,
            events_max_msgs: -1,
            hub_probe_addr: None,
            leaf_restart_cmd: None,
            leaf_stuck_secs: 60,
            leaf_creds: None,
            hub_url: None,
            enrol_creds: None,
            join_token: None,
            host_token: None,
            leaf_creds_from: None,
            renew_only: false,
            hub_ca: None,
            sys_creds: None,
            renew_check_secs: 600,
            key_dir: std::env::temp_dir().join("edge-site-manager"),
            secrets_dir: PathBuf::from("/dev/shm/edge-secrets"),
            secrets_sender: None,
            apps_signer: None,
            app_bus_port: 4229,
            app_bus_join: false,
            default_memory_mb: 1024,
            stats_secs: 15,
            telemetry_max_bytes: 64 << 20,
            images_max_bytes: 8 << 30,
            image_gc_secs: 0,
            network_pool: Default::default(),
        }
    }

    /// The host id: configured, or the sanitised host name.
    pub fn host_name(&self) -> Name {
        if let Some(h) = &self.host {
            return h.clone();
        }
        let raw = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_lowercase();
        let cleaned: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(63).collect();
        Name::new(cleaned.trim_matches('-')).unwrap_or_else(|_| Name::new("host").expect("valid"))
    }

    pub fn label_map(&self) -> BTreeMap<String, LabelValue> {
        self.labels.iter().cloned().collect()
    }

    pub fn host_label_map(&self) -> BTreeMap<String, LabelValue> {
        self.host_labels.iter().cloned().collect()
    }

    pub fn limits(&self) -> SiteStreamLimits {
        SiteStreamLimits {
            max_bytes: self.events_max_bytes,
            max_messages: self.events_max_msgs,
            telemetry_max_bytes: self.telemetry_max_bytes,
            ..Default::default()
        }
    }

    /// The maintenance window, if one is configured (checked at parse time).
    pub fn window(&self) -> Result<Option<crate::window::Window>, String> {
        self.maintenance_window.as_deref().map(|w| crate::window::Window::parse(w, &self.utc_offset)).transpose()
    }

    /// This host's key file.
    pub fn key_file(&self) -> PathBuf {
        self.key_dir.join(format!("{}-{}.xk", self.site, self.host_name()))
    }

    pub fn resync(&self) -> Duration {
        Duration::from_secs(self.resync_secs)
    }
}

fn parse_site(s: &str) -> Result<Name, String> {
    Name::site(s).map_err(|e| e.to_string())
}

fn parse_window(s: &str) -> Result<String, String> {
    crate::window::Window::parse(s, "").map(|_| s.to_string())
}

fn parse_name(s: &str) -> Result<Name, String> {
    Name::new(s).map_err(|e| e.to_string())
}

fn parse_label(s: &str) -> Result<(String, LabelValue), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("label {s:?} is not key=value"))?;
    let key_ok = !k.is_empty()
        && k.len() <= 63
        && k.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
    let val_ok = v.len() <= 63 && v.chars().all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
    if !key_ok || !val_ok {
        return Err(format!("label {s:?}: keys and values use A-Z a-z 0-9 . _ / - and at most 63 characters"));
    }
    Ok((k.to_string(), LabelValue(v.to_string())))
}
