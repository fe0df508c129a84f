//! Configuration, from flags or `REGISTRY_SYNC_*` environment variables.

use std::time::Duration;

#[derive(Clone, Debug, clap::Parser)]
#[command(name = "registry-sync", version)]
pub struct Config {
    /// URL of the hub NATS server.
    #[arg(long, env = "REGISTRY_SYNC_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Credentials file (user JWT and nkey seed) to connect with, issued by the authority
    /// (`edgectl auth`); the file is read, never logged.
    #[arg(long, env = "REGISTRY_SYNC_NATS_CREDS")]
    pub nats_creds: Option<std::path::PathBuf>,
    /// Most bytes per second sent to any one site (0: no limit).
    #[arg(long, env = "REGISTRY_SYNC_SITE_BYTES_PER_SEC", default_value_t = 0)]
    pub site_bytes_per_sec: u64,
    /// Seconds between staging passes (each change starts one at once).
    #[arg(long, env = "REGISTRY_SYNC_PASS_SECS", default_value_t = 10)]
    pub pass_secs: u64,
    /// Sites staged at once.
    #[arg(long, env = "REGISTRY_SYNC_CONCURRENT_SITES", default_value_t = 8)]
    pub concurrent_sites: usize,
    /// Seconds a blob no app at a site needs stays in the site's store before it is deleted
    /// (longer than the site-manager's `SITE_MANAGER_IMAGE_GC_SECS`, so a host still knows
    /// which Docker images came from the store when it removes them).
    #[arg(long, env = "REGISTRY_SYNC_GC_GRACE_SECS", default_value_t = 172_800)]
    pub gc_grace_secs: u64,
    /// Seconds a blob seen at a site is trusted to still be there; a blob the site deleted
    /// (found corrupt) is sent again within this long.
    #[arg(long, env = "REGISTRY_SYNC_RECHECK_SECS", default_value_t = 120)]
    pub recheck_secs: u64,
    /// Registries (`host:port`) imported from over plain HTTP; loopback ones always are.
    #[arg(long, env = "REGISTRY_SYNC_INSECURE_REGISTRIES", value_delimiter = ',')]
    pub insecure_registries: Vec<String>,
}

impl Config {
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            nats_creds: None,
            site_bytes_per_sec: 0,
            pass_secs: 10,
            concurrent_sites: 8,
            gc_grace_secs: 172_800,
            recheck_secs: 120,
            insecure_registries: Vec::new(),
        }
    }

    pub fn gc_grace(&self) -> Duration {
        Duration::from_secs(self.gc_grace_secs)
    }

    pub fn pass_every(&self) -> Duration {
        Duration::from_secs(self.pass_secs.max(1))
    }
}
