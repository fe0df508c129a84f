//! The Kubernetes manifests of `k8s/` are valid offline: every resource of every kustomization
//! validates strictly against Kubernetes' own schemas (kubernetes-validate, installed into
//! `.tools/python` by `scripts/setup.sh`), every file of a kustomization directory is listed in
//! it, and what the manifests configure exists (the service commands, the health probe, the
//! variables the binaries read).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Kubernetes version the manifests are checked against.
const KUBERNETES: &str = "1.30.0";

fn kustomizations() -> Vec<PathBuf> {
    ["k8s/base", "k8s/site"].iter().map(|d| root().join(d)).collect()
}

fn resources(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(dir.join("kustomization.yaml")).expect("kustomization.yaml");
    let k: Value = serde_norway::from_str(&text).expect("kustomization parses");
    assert_eq!(k["kind"], "Kustomization", "{}", dir.display());
    k["resources"].as_array().expect("resources").iter().map(|r| dir.join(r.as_str().expect("path"))).collect()
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let mut files = Vec::new();
    for dir in kustomizations() {
        let listed = resources(&dir);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".yaml") && name != "kustomization.yaml" {
                assert!(listed.contains(&path), "{} is not listed in its kustomization", path.display());
            }
        }
        for r in &listed {
            assert!(r.exists(), "{} lists {}, which does not exist", dir.display(), r.display());
        }
        files.extend(listed);
    }
    let python = root().join(".tools/python");
    assert!(python.exists(), "kubernetes-validate is missing: run scripts/setup.sh (make test does)");
    let out = Command::new("python3")
        .env("PYTHONPATH", &python)
        .args(["-m", "kubernetes_validate", "--strict", "-k", KUBERNETES])
        .args(&files)
        .output()
        .expect("python3 runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "manifests do not validate:\n{report}");
    let passed = report.lines().filter(|l| l.contains(" passed ")).count();
    assert!(passed >= files.len(), "every resource was checked:\n{report}");
}

#[test]
fn the_manifests_configure_what_the_binaries_read() {
    let mut text = String::new();
    for dir in kustomizations() {
        for r in resources(&dir) {
            text += &std::fs::read_to_string(r).unwrap();
        }
    }
    for command in ["/bin/scheduler", "/bin/secrets", "/bin/registry-sync", "/bin/telemetry", "/bin/site-manager"] {
        assert!(text.contains(command), "{command} is deployed");
    }
    // Variables the binaries read (clap `env` names and the bus library's), as the manifests set them.
    for var in [
        "SCHEDULER_NATS_URL",
        "SECRETS_NATS_URL",
        "SECRETS_MASTER_KEY_FILE",
        "REGISTRY_SYNC_NATS_URL",
        "TELEMETRY_NATS_URL",
        "TELEMETRY_LISTEN",
        "EDGE_JS_REPLICAS",
        "SITE_MANAGER_SITE",
        "SITE_MANAGER_NATS_URL",
        "SITE_MANAGER_HOST",
        "SITE_MANAGER_KEY_DIR",
        "SITE_MANAGER_SECRETS_DIR",
    ] {
        assert!(text.contains(var), "{var} is set");
        let read = ["services", "crates/edge-bus/src"].iter().any(|d| grep(&root().join(d), var));
        assert!(read, "{var} is read by some binary");
    }
}

fn grep(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            grep(&p, needle)
        } else {
            p.extension().is_some_and(|x| x == "rs") && std::fs::read_to_string(&p).is_ok_and(|t| t.contains(needle))
        }
    })
}
