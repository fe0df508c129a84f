//! How the project runs nats-server: the configuration files of `nats-config/` (embedded here,
//! so tools work from any directory) and the environment variables that fill them in.

use std::path::{Path, PathBuf};

/// `nats-config/hub.conf`.
pub const HUB_CONF: &str = include_str!("../../../nats-config/hub.conf");
/// `nats-config/leaf.conf`.
pub const LEAF_CONF: &str = include_str!("../../../nats-config/leaf.conf");

/// Ports and store of a hub server.
#[derive(Clone, Debug)]
pub struct HubPorts {
    pub client: u16,
    pub leaf: u16,
    pub http: u16,
}

/// Ports of a site leaf server.
#[derive(Clone, Debug)]
pub struct LeafPorts {
    pub client: u16,
    pub http: u16,
}

/// Environment that fills in `hub.conf`; `tls` is the leafnode listener's certificate and key.
pub fn hub_env(name: &str, ports: &HubPorts, store: &Path, tls: (&Path, &Path)) -> Vec<(String, String)> {
    vec![
        ("HUB_NAME".into(), name.into()),
        ("HUB_HOST".into(), "127.0.0.1".into()),
        ("HUB_PORT".into(), ports.client.to_string()),
        ("HUB_LEAF_PORT".into(), ports.leaf.to_string()),
        ("HUB_HTTP_PORT".into(), ports.http.to_string()),
        ("HUB_STORE_DIR".into(), store.display().to_string()),
        ("HUB_RESOLVER_DIR".into(), store.join("resolver").display().to_string()),
        ("HUB_TLS_CERT".into(), tls.0.display().to_string()),
        ("HUB_TLS_KEY".into(), tls.1.display().to_string()),
    ]
}

/// The leaf's durability setting: fsync every acknowledged write.
pub const LEAF_SYNC_INTERVAL: &str = "always";

/// What a site's leaf server is given from its bundle (`edgectl site add`).
pub struct LeafAuth<'a> {
    /// The leaf link's credentials file.
    pub creds: &'a Path,
    /// The CA certificate that verifies the hub.
    pub tls_ca: &'a Path,
    /// The key of the encrypted JetStream store.
    pub store_key: String,
}

/// Environment that fills in `leaf.conf`.
pub fn leaf_env(
    site: &str,
    ports: &LeafPorts,
    store: &Path,
    hub_leaf_url: &str,
    auth: &LeafAuth,
) -> Vec<(String, String)> {
    vec![
        ("SITE_ID".into(), site.into()),
        ("LEAF_HOST".into(), "127.0.0.1".into()),
        ("LEAF_PORT".into(), ports.client.to_string()),
        ("LEAF_HTTP_PORT".into(), ports.http.to_string()),
        ("LEAF_STORE_DIR".into(), store.display().to_string()),
        ("HUB_LEAF_URL".into(), hub_leaf_url.into()),
        ("LEAF_SYNC_INTERVAL".into(), LEAF_SYNC_INTERVAL.into()),
        ("LEAF_CREDS".into(), auth.creds.display().to_string()),
        ("LEAF_TLS_CA".into(), auth.tls_ca.display().to_string()),
        ("LEAF_STORE_KEY".into(), auth.store_key.clone()),
    ]
}

/// The nats-server binary: `$NATS_SERVER_BIN`, else the project's `.tools/bin/nats-server`
/// (installed by `scripts/setup.sh`), else `nats-server` on `PATH`.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/nats-server");
    if tools.exists() {
        return tools;
    }
    PathBuf::from("nats-server")
}

/// A free TCP port on loopback (released before return, so there is a small race).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
