//! What this host has: architecture, CPUs, memory, free disk, GPUs and devices such as cameras.

use std::collections::BTreeMap;
use std::path::Path;

use edge_types::site::{HostInventory, LabelValue};
use edge_types::Name;

use crate::runtime::{DockerRuntime, RuntimeError};

/// Reads the host's inventory from the Docker Engine and `/dev`.
pub async fn read(
    runtime: &DockerRuntime,
    host: &Name,
    labels: &BTreeMap<String, LabelValue>,
) -> Result<HostInventory, RuntimeError> {
    let info = runtime.info().await?;
    let root = info.docker_root_dir.clone().unwrap_or_else(|| "/".into());
    let disk_bytes = free_bytes(Path::new(&root)).or_else(|| free_bytes(Path::new("/"))).unwrap_or(0);
    let (gpus, devices) = devices(Path::new("/dev"));
    Ok(HostInventory {
        host: host.clone(),
        arch: docker_arch(info.architecture.as_deref().unwrap_or(std::env::consts::ARCH)),
        os: info.operating_system.unwrap_or_else(|| std::env::consts::OS.into()).chars().take(64).collect(),
        cpus: info.ncpu.unwrap_or(0).max(0) as u32,
        memory_bytes: info.mem_total.unwrap_or(0).max(0) as u64,
        disk_bytes,
        gpus,
        devices,
        labels: labels.clone(),
    })
}

/// Docker's platform name for a kernel architecture.
pub fn docker_arch(arch: &str) -> String {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "armv7l" | "armhf" => "arm",
        other => other,
    }
    .into()
}

pub fn free_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// GPU nodes (`/dev/nvidia<N>`, `/dev/dri/renderD*`) and camera nodes (`/dev/video*`).
fn devices(dev: &Path) -> (Vec<String>, Vec<String>) {
    let names = |p: &Path| -> Vec<String> {
        std::fs::read_dir(p)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    let mut gpus = Vec::new();
    let mut devices = Vec::new();
    for n in names(dev) {
        let is_nvidia =
            n.strip_prefix("nvidia").is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()));
        if is_nvidia {
            gpus.push(format!("/dev/{n}"));
        } else if n.starts_with("video") {
            devices.push(format!("/dev/{n}"));
        }
    }
    for n in names(&dev.join("dri")) {
        if n.starts_with("renderD") {
            gpus.push(format!("/dev/dri/{n}"));
        }
    }
    gpus.sort();
    devices.sort();
    gpus.truncate(64);
    devices.truncate(256);
    (gpus, devices)
}
