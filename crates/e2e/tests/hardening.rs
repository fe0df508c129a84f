//! Container hardening defaults, as Docker applies them at a real site: no privilege gained
//! through setuid binaries, a bounded number of processes, a memory limit even when the spec
//! sets none, and a read-only root filesystem when the spec asks for one.

mod support;

use anyhow::{ensure, Result};
use bollard::query_parameters::InspectContainerOptions;
use support::{sleeper, Stack};

fn docker_exec(id: &str, args: &[&str]) -> Result<bool> {
    Ok(std::process::Command::new("docker").args(["exec", id]).args(args).output()?.status.success())
}

#[tokio::test]
async fn containers_run_hardened_and_read_only_when_asked() -> Result<()> {
    let stack = Stack::start(&[&[("tier", "hard")]]).await?;
    let site = stack.site(0).clone();
    let mut spec = sleeper("hardened", "tier = hard", "edge/busybox:v1", &[]);
    spec["services"][0]["read_only_root"] = true.into();
    spec["services"][0]["resources"] = serde_json::json!({});
    stack.apply(&spec).await?;
    stack.wait_running(&[&site], "hardened", 1).await?;
    let id = stack.containers(&site, "hardened").await?[0].id.clone();
    let host =
        stack.docker.inspect_container(&id, None::<InspectContainerOptions>).await?.host_config.unwrap_or_default();
    assert_eq!(host.security_opt, Some(vec!["no-new-privileges:true".to_string()]));
    assert_eq!(host.pids_limit, Some(site_manager::runtime::PIDS_LIMIT));
    assert_eq!(host.memory, Some(1024 * 1024 * 1024), "the default limit when the spec sets none");
    assert_eq!(host.readonly_rootfs, Some(true));
    assert!(host.privileged != Some(true), "never privileged");
    assert_ne!(host.network_mode.as_deref(), Some("host"), "never the host's network");
    // The image's shell writes (it has no `touch`).
    ensure!(docker_exec(&id, &["sh", "-c", "echo x > /tmp/written"])?, "/tmp is writable");
    ensure!(!docker_exec(&id, &["sh", "-c", "echo x > /written"])?, "the root filesystem is read-only");
    Ok(())
}
