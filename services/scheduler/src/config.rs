//! Configuration of the scheduler, from flags or `SCHEDULER_*` environment variables.

use std::time::Duration;

use edge_types::selector::LabelOrders;

/// scheduler: accepts applications, places them on sites by label, and writes each site's
/// desired state.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "scheduler", version)]
pub struct Config {
    /// URL of the hub NATS server.
    #[arg(long, env = "SCHEDULER_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Credentials file (user JWT and nkey seed) to connect with, issued by the authority
    /// (`edgectl auth`); the file is read, never logged.
    #[arg(long, env = "SCHEDULER_NATS_CREDS")]
    pub nats_creds: Option<std::path::PathBuf>,
    /// Seconds between full placement passes over every app (a safety net; applies, deletes,
    /// registrations and label changes place at once).
    #[arg(long, env = "SCHEDULER_RESYNC_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub resync_secs: u64,
    /// A site is shown as connected while its last heartbeat is younger than this many seconds.
    #[arg(long, env = "SCHEDULER_SITE_TIMEOUT_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub site_timeout_secs: u64,
    /// Orders of label values that placement may compare, e.g.
    /// `size=small<medium<large;tier=bronze<silver<gold` (then `size >= medium` means medium or
    /// large).
    #[arg(long, env = "SCHEDULER_LABEL_ORDERS", default_value = "", value_parser = LabelOrders::parse)]
    pub label_orders: LabelOrders,
    /// Images apps may use without their being in the image store, because the hosts already
    /// have them: comma-separated references or prefixes ending in `*` (`*` alone: any). Every
    /// other image must be pushed first (`edgectl image push`), or apply refuses the app.
    #[arg(long, env = "SCHEDULER_IMAGES_FROM_HOSTS", default_value = "", value_delimiter = ',')]
    pub images_from_hosts: Vec<String>,
    /// The control account's signing key seed (`accounts/EDGE.signer.seed` of the authority):
    /// with it the scheduler renews sites' leaf-link credentials (`site.renew`), without it it
    /// refuses renewals. The file is read once, never logged.
    #[arg(long, env = "SCHEDULER_LEAF_SIGNER")]
    pub leaf_signer: Option<std::path::PathBuf>,
    /// The hosts' signing key seed (`accounts/HOSTS.signer.seed` of the authority): with it the
    /// scheduler gives hosts that join a site with their own key (`edgectl host invite`) their
    /// credential in the site's account; without it it refuses hosts' joins. Read once, never
    /// logged.
    #[arg(long, env = "SCHEDULER_HOST_SIGNER")]
    pub host_signer: Option<std::path::PathBuf>,
    /// How long a renewed leaf-link credential is valid, in seconds (default 90 days).
    #[arg(long, env = "SCHEDULER_LEAF_VALID_SECS", default_value_t = 90 * 24 * 3600, value_parser = clap::value_parser!(u64).range(60..))]
    pub leaf_valid_secs: u64,
}

impl Config {
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            nats_creds: None,
            resync_secs: 30,
            site_timeout_secs: 15,
            label_orders: LabelOrders::default(),
            images_from_hosts: Vec::new(),
            leaf_signer: None,
            host_signer: None,
            leaf_valid_secs: 90 * 24 * 3600,
        }
    }

    /// Whether `reference` (normalized) may come from the hosts rather than the image store.
    pub fn image_from_hosts(&self, reference: &str) -> bool {
        self.images_from_hosts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()).any(|p| match p.strip_suffix('*') {
            Some(prefix) => reference.starts_with(prefix),
            None => edge_types::image::normalize(p).as_deref() == Some(reference),
        })
    }
    pub fn resync(&self) -> Duration {
        Duration::from_secs(self.resync_secs)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn images_from_hosts_match_by_reference_or_prefix() {
        let mut c = super::Config::new("nats://x");
        assert!(!c.image_from_hosts("edge/busybox:v1"));
        c.images_from_hosts = vec!["edge/busybox".into(), "vendor/*".into()];
        assert!(!c.image_from_hosts("edge/busybox:v1"));
        assert!(c.image_from_hosts("edge/busybox:latest"));
        assert!(c.image_from_hosts("vendor/cam:2"));
        c.images_from_hosts = vec!["*".into()];
        assert!(c.image_from_hosts("anything:1"));
    }
}
