//! Processes the benchmarks start and watch: the project's own service binaries (release builds
//! next to this one), and what `/proc` says about any process (CPU time, resident memory).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// CPU seconds a process has used (user + system), from `/proc`; 0 where unreadable.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0 // utime + stime, in clock ticks of 1/100 s
}

/// Resident memory of a process in bytes (`VmRSS`), 0 where unreadable.
pub fn rss_bytes(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:") * 1024
}

/// Peak resident memory of a process in bytes (`VmHWM`), 0 where unreadable.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:") * 1024
}

/// Resident memory in bytes split as the kernel counts it: anonymous (heap, stacks) and
/// file-backed (the executable's and libraries' pages).
pub fn rss_parts(pid: u32) -> (u64, u64) {
    (status_kib(pid, "RssAnon:") * 1024, status_kib(pid, "RssFile:") * 1024)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// MiB, for tables.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Where the service binaries are: beside this benchmark's own executable (`make bench` builds
/// them in release mode first).
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the benchmark executable")?;
    Ok(exe.parent().context("the benchmark executable has no directory")?.to_path_buf())
}

/// One of the project's service binaries, running as its own process; killed when dropped.
pub struct Service {
    pub name: String,
    child: tokio::process::Child,
}

impl Service {
    /// Starts `binary` from [`bin_dir`] with `env` (nothing else of this process's environment
    /// that configures services leaks in: the child gets only `PATH`, `HOME` and `env`).
    pub fn start(name: &str, binary: &str, env: &[(&str, String)]) -> Result<Self> {
        Self::start_at(name, &bin_dir()?.join(binary), env)
    }

    /// [`Service::start`] for the executable at `path`.
    pub fn start_at(name: &str, path: &std::path::Path, env: &[(&str, String)]) -> Result<Self> {
        if !path.exists() {
            bail!("{} is missing: build it first (make bench does)", path.display());
        }
        let mut cmd = tokio::process::Command::new(path);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("RUST_LOG", std::env::var("BENCH_SERVICE_LOGS").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            // `BENCH_SERVICE_LOGS=<filter>` shows the services' own logs (`warn`, `info`, ...).
            .stdout(if std::env::var_os("BENCH_SERVICE_LOGS").is_some() { Stdio::inherit() } else { Stdio::null() })
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", path.display()))?;
        Ok(Self { name: name.into(), child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    pub fn rss(&self) -> u64 {
        rss_bytes(self.pid())
    }

    /// Kills the process (SIGKILL) without waiting.
    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Asks the process to stop (SIGTERM) and waits up to `limit` for it.
    pub async fn stop(mut self, limit: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        }
        if tokio::time::timeout(limit, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// The site agent as shipped: the `agent` profile's build (size-optimized, see Cargo.toml) when
/// there is one beside the release directory, else the release build.
pub fn site_manager_binary() -> Result<PathBuf> {
    let release = bin_dir()?;
    let agent = release.parent().map(|t| t.join("agent").join("site-manager"));
    Ok(agent.filter(|p| p.exists()).unwrap_or_else(|| release.join("site-manager")))
}

/// A site's `site-manager` process (host `h1`) on the leaf server at `leaf_url`, its keys and
/// secret files under `home`, image garbage collection off.
/// Connects with the leaf's site-manager credentials.
pub fn start_site_manager(
    site: &edge_types::Name,
    leaf: &edge_testkit::NatsServer,
    home: &std::path::Path,
) -> Result<Service> {
    Service::start_at(
        "site-manager",
        &site_manager_binary()?,
        &[
            ("SITE_MANAGER_NATS_URL", leaf.url()),
            ("SITE_MANAGER_NATS_CREDS", leaf.creds().display().to_string()),
            ("SITE_MANAGER_SITE", site.to_string()),
            ("SITE_MANAGER_HOST", "h1".into()),
            ("SITE_MANAGER_KEY_DIR", home.join("keys").display().to_string()),
            ("SITE_MANAGER_SECRETS_DIR", home.join("secrets").display().to_string()),
            ("SITE_MANAGER_IMAGE_GC_SECS", "0".into()),
        ],
    )
}

/// Waits until a central service answers its health request (`edge.v1.<service>.health`).
pub async fn wait_healthy(client: &async_nats::Client, service: &str, limit: Duration) -> Result<()> {
    let subject = format!("{}.{service}.health", edge_types::subject::PREFIX);
    let start = Instant::now();
    loop {
        if let Ok(Ok(reply)) =
            tokio::time::timeout(Duration::from_secs(1), client.request(subject.clone(), Vec::new().into())).await
        {
            let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
            if body["status"] == "ok" {
                return Ok(());
            }
        }
        if start.elapsed() > limit {
            bail!("{service} did not become healthy within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
