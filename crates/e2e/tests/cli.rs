//! The `edgectl` binary end to end: `dev up` runs a real stack as processes, the app and site
//! commands drive it, `dev down` removes it. Needs `cargo build --workspace` first (`make test`
//! does it).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

fn bin_dir() -> PathBuf {
    // target/debug/deps/cli-<hash> -> target/debug
    std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf()
}

struct Dev {
    dir: tempfile::TempDir,
}

impl Dev {
    fn edgectl(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("edgectl"))
            .args(args)
            .env("EDGE_DEV_DIR", self.dir.path().join("state"))
            .env_remove("EDGE_NATS_URL")
            .output()
            .expect("edgectl runs")
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.edgectl(args);
        if !out.status.success() {
            bail!("edgectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    fn json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.ok(&a)?)?)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.edgectl(&["dev", "down"]);
    }
}

#[tokio::test]
async fn edgectl_drives_a_dev_stack() -> Result<()> {
    if !bin_dir().join("site-manager").exists() {
        bail!("build the workspace first: cargo build --workspace");
    }
    let dev = Dev { dir: tempfile::tempdir()? };
    let up = dev.ok(&["dev", "up", "--sites", "2"])?;
    assert!(up.contains("2 sites registered"), "{up}");

    let sites = dev.json(&["site", "list"])?;
    let names: Vec<&str> = sites["sites"].as_array().unwrap().iter().map(|s| s["site"].as_str().unwrap()).collect();
    assert_eq!(names, ["site-1", "site-2"]);
    let table = dev.ok(&["site", "list"])?;
    assert!(table.starts_with("SITE") && table.contains("customer=acme,region=eu"), "{table}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(table.contains(&format!("sites per version: {version}: 2")), "{table}");

    // An app placed on region = us lands on site-2 only.
    let spec = dev.dir.path().join("app.yaml");
    std::fs::write(
        &spec,
        "name: cli-demo\nversion: \"1\"\nservices:\n  - name: main\n    image: edge/busybox:v1\n    command: [sleep, \"3600\"]\nplacement:\n  sites: region = us\n",
    )?;
    let applied = dev.json(&["app", "apply", "-f", spec.to_str().unwrap()])?;
    assert_eq!(applied["sites"], serde_json::json!(["site-2"]));
    let start = Instant::now();
    loop {
        let list = dev.json(&["app", "list"])?;
        if list["apps"][0]["sites_running"] == 1 {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("cli-demo never ran: {list}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let status = dev.ok(&["app", "status", "cli-demo"])?;
    assert!(status.contains("site-2") && status.contains("running") && !status.contains("site-1"), "{status}");

    // The preview lists each site's hosts; version 2 goes out through a rollout; history and
    // rollback work from the CLI.
    let plan = dev.ok(&["app", "plan", "-f", spec.to_str().unwrap()])?;
    assert!(
        plan.starts_with("SITE ")
            && plan.contains("HOST")
            && plan.contains("`region = us` fails: the site has region=eu"),
        "{plan}"
    );
    let v2 = std::fs::read_to_string(&spec)?.replace("version: \"1\"", "version: \"2\"")
        + "rollout:\n  sites_in_parallel: 1\n  healthy_time_secs: 1\n";
    std::fs::write(&spec, v2)?;
    dev.ok(&["app", "apply", "-f", spec.to_str().unwrap()])?;
    let start = Instant::now();
    let rollout = loop {
        let out = dev.ok(&["app", "rollout", "status", "cli-demo"])?;
        if out.contains("complete") {
            break out;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the rollout never completed: {out}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(rollout.starts_with("cli-demo 1 -> 2 (generation 2): complete"), "{rollout}");
    assert!(rollout.contains("[####################] 1/1"), "{rollout}");
    let history = dev.ok(&["app", "history", "cli-demo"])?;
    assert!(history.contains("rolled out") && history.lines().count() == 3, "{history}");
    let back = dev.json(&["app", "rollback", "cli-demo"])?;
    assert_eq!((back["generation"].as_u64(), back["spec"]["version"].as_str()), (Some(3), Some("1")));

    // Errors are one sentence on stderr and a non-zero exit.
    let missing = dev.edgectl(&["app", "status", "nope"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    let bad_spec = std::fs::read_to_string(&spec)?.replace("name: cli-demo", "name: Bad.Name");
    std::fs::write(&spec, bad_spec)?;
    let bad = dev.edgectl(&["app", "apply", "-f", spec.to_str().unwrap()]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.starts_with("error: invalid request: /name:"), "{stderr}");

    // Logs on demand: every host answers (the demo's sleep prints nothing), within the wait.
    let logs = dev.edgectl(&["logs", "cli-demo", "-o", "json"]);
    assert!(logs.status.success(), "{}", String::from_utf8_lossy(&logs.stderr));
    let done = String::from_utf8_lossy(&logs.stdout).lines().filter(|l| l.contains("\"done\":true")).count();
    assert!(done >= 1 && String::from_utf8_lossy(&logs.stderr).is_empty(), "{}", String::from_utf8_lossy(&logs.stdout));

    dev.ok(&["app", "delete", "cli-demo"])?;

    // Secrets: the value from a file; list and describe never show it; a second put conflicts.
    let value_file = dev.dir.path().join("pw.txt");
    std::fs::write(&value_file, "cli-plaintext-value")?;
    let put = dev.ok(&["secret", "put", "cli-pw", "--from-file", value_file.to_str().unwrap()])?;
    assert!(put.contains("default/cli-pw") && !put.contains("cli-plaintext-value"), "{put}");
    dev.ok(&["secret", "rotate", "cli-pw", "--from-file", value_file.to_str().unwrap()])?;
    let listed = dev.json(&["secret", "list"])?;
    assert_eq!(listed["secrets"][0]["version"], 2, "{listed}");
    let described = dev.ok(&["secret", "describe", "cli-pw"])?;
    assert!(described.contains("VERSION") && !described.contains("cli-plaintext-value"), "{described}");
    let again = dev.edgectl(&["secret", "put", "cli-pw", "--from-file", value_file.to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("rotate it"));
    dev.ok(&["secret", "delete", "cli-pw"])?;

    let down = dev.ok(&["dev", "down"])?;
    assert!(down.contains("stopped"));
    assert!(!dev.dir.path().join("state").exists());
    Ok(())
}
