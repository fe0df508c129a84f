//! Secrets end to end, on real nats-servers and the real Docker Engine: stored encrypted,
//! delivered sealed only to the sites whose applications use them, rotated into running
//! containers, withdrawn on undeploy; misaddressed and replayed envelopes are refused; no
//! plaintext in any stream or log line.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use async_nats::jetstream::{self, consumer};
use edge_testkit::unique;
use edge_types::secret::{AuditAction, AuditEvent, SealedSecret};
use edge_types::subject::ApiOp;
use edge_types::Name;
use futures::StreamExt;
use serde_json::json;
use support::*;

/// Every log line of the services in this test process.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Logs {
    let logs = Logs::default();
    let writer = logs.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(edge_bus::logging::filter("debug"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init();
    logs
}

/// Every message (subject, payload) of a stream.
async fn messages(js: &jetstream::Context, stream: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let Ok(stream) = js.get_stream(stream).await else { return Ok(Vec::new()) };
    let consumer = stream.create_consumer(consumer::pull::OrderedConfig::default()).await?;
    let pending = consumer.clone().info().await?.num_pending;
    let mut out = Vec::new();
    let mut msgs = consumer.messages().await?;
    while (out.len() as u64) < pending {
        let m = tokio::time::timeout(Duration::from_secs(5), msgs.next()).await?.context("stream ended")??;
        out.push((m.subject.to_string(), m.payload.to_vec()));
    }
    Ok(out)
}

/// Every stream of a JetStream domain, KV buckets included.
async fn all_streams(js: &jetstream::Context) -> Result<Vec<(String, Vec<u8>)>> {
    let names: Vec<String> = js.stream_names().collect::<Vec<_>>().await.into_iter().collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for n in names {
        out.extend(messages(js, &n).await?);
    }
    Ok(out)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A sealed secret (the hosts' copies of the site key, in `edge_keys`, are not secrets).
fn holds_sealed_secret(subject: &str, body: &[u8]) -> bool {
    !subject.starts_with("$KV.edge_keys.") && contains(body, "\"sealed\"")
}

fn cat(container: &str, path: &str) -> Result<String> {
    let out = std::process::Command::new("docker").args(["exec", container, "cat", path]).output()?;
    ensure!(out.status.success(), "docker exec cat {path}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// Audit events of the secrets service (hub AUDIT) and of the sites (hub SITE_EVENTS).
async fn audits(stack: &Stack) -> Result<Vec<AuditEvent>> {
    let js = edge_bus::topology::hub_js(&stack.client);
    let mut out = Vec::new();
    for stream in ["AUDIT", "SITE_EVENTS"] {
        for (subject, body) in messages(&js, stream).await? {
            if subject.starts_with("edge.v1.audit.") || subject.ends_with(".audit") {
                out.push(serde_json::from_slice(&body)?);
            }
        }
    }
    Ok(out)
}

/// The envelope the hub holds for a secret at a site.
async fn envelope(stack: &Stack, site: &Name, secret: &str) -> Result<SealedSecret> {
    let js = edge_bus::topology::hub_js(&stack.client);
    let stream = js.get_stream(edge_bus::topology::desired_stream_of(site)).await?;
    let subject = edge_types::subject::sealed_secret(site, &Name::new("default")?, &Name::new(secret)?);
    let msg = stream.get_last_raw_message_by_subject(&subject).await?;
    Ok(serde_json::from_slice(&msg.payload)?)
}

async fn publish_envelope(stack: &Stack, e: &SealedSecret) -> Result<()> {
    let js = edge_bus::topology::hub_js(&stack.client);
    let subject = edge_types::subject::sealed_secret(&e.site, &e.tenant, &e.name);
    js.publish(subject, serde_json::to_vec(e)?.into()).await?.await?;
    Ok(())
}

#[tokio::test]
async fn secrets_reach_only_the_sites_that_need_them_sealed_rotate_and_are_withdrawn() -> Result<()> {
    let logs = capture_logs();
    let stack = Stack::start(&[&[("tier", "db")], &[("tier", "db")], &[("tier", "web")]]).await?;
    let (a, b, c) = (stack.site(0).clone(), stack.site(1).clone(), stack.site(2).clone());
    let (pw, token) = (unique("plain-pw"), unique("plain-token"));
    stack.secret(ApiOp::SecretPut, "db-password", &pw).await?;
    stack.secret(ApiOp::SecretPut, "api-token", &token).await?;
    let app = unique("vault");
    let spec = json!({
        "name": app, "version": "1", "placement": {"sites": "tier = db"},
        "services": [{
            "name": "api", "image": "edge/busybox:v1", "command": ["sleep", "3600"],
            "secrets": [{"name": "db-password", "on_rotate": "in-place"}, {"name": "api-token", "env": "API_TOKEN"}]
        }]
    });
    stack.apply(&spec).await?;
    stack.wait_running(&[&a, &b], &app, 1).await?;
    for site in [&a, &b] {
        let ctr = &stack.containers(site, &app).await?[0];
        assert!(ctr.env.contains(&format!("API_TOKEN={token}")), "the env secret is in the container");
        assert_eq!(cat(&ctr.id, "/run/secrets/db-password")?, pw, "the file secret is in the container");
    }
    let info = stack.secret_describe("db-password").await?;
    assert_eq!(info.apps, vec![Name::new(&app)?]);
    assert_eq!(info.sites.len(), 2, "delivered to the two sites that run the app: {:?}", info.sites);
    assert!(!info.sites.contains(&c));

    // The third site never received anything: no subject, no ciphertext.
    let c_js = stack.site_js(2).await?;
    for (subject, body) in all_streams(&c_js).await? {
        assert!(!subject.contains("._secret."), "site c holds {subject}");
        assert!(!holds_sealed_secret(&subject, &body), "site c holds ciphertext in {subject}");
    }

    // Rotation: the in-place file changes in the running container; the env secret replaces it.
    let v1_at_a = envelope(&stack, &a, "db-password").await?;
    let before = stack.containers(&a, &app).await?[0].id.clone();
    let pw2 = unique("plain-pw2");
    stack.secret(ApiOp::SecretRotate, "db-password", &pw2).await?;
    stack
        .eventually("the rotated file in the running containers", || async {
            let mut ok = true;
            for site in [&a, &b] {
                let ctr = &stack.containers(site, &app).await?[0];
                ok &= cat(&ctr.id, "/run/secrets/db-password").is_ok_and(|v| v == pw2);
            }
            Ok(ok)
        })
        .await?;
    assert_eq!(stack.containers(&a, &app).await?[0].id, before, "in-place rotation restarts nothing");
    let token2 = unique("plain-token2");
    stack.secret(ApiOp::SecretRotate, "api-token", &token2).await?;
    stack
        .eventually("containers replaced with the rotated env secret", || async {
            let mut ok = true;
            for site in [&a, &b] {
                let c = stack.containers(site, &app).await?;
                ok &= c.len() == 1 && c[0].running && c[0].env.contains(&format!("API_TOKEN={token2}"));
            }
            Ok(ok)
        })
        .await?;

    // An old version replayed to its site, a tampered box, and a site's box readdressed to
    // another site: refused, audited with the reason, counted in the sites' heartbeats.
    let current = envelope(&stack, &a, "db-password").await?;
    assert_eq!(current.version, 2);
    // One at a time: each replaces the last on its subject at the hub, so a site whose source
    // had not copied one yet would never see it.
    let refused = |site: Name, why: &'static str| {
        let stack = &stack;
        async move {
            let what = format!("{site} refuses and audits: {why}");
            stack
                .eventually(&what, || async {
                    let refused: Vec<(Name, String)> = audits(stack)
                        .await?
                        .into_iter()
                        .filter(|e| e.action == AuditAction::Rejected)
                        .filter_map(|e| Some((e.site?, e.detail.unwrap_or_default())))
                        .collect();
                    ensure!(refused.iter().any(|(s, d)| s == &site && d.contains(why)), "refused so far: {refused:?}");
                    Ok(true)
                })
                .await
        }
    };
    publish_envelope(&stack, &v1_at_a).await?;
    refused(a.clone(), "replay").await?;
    let mut tampered = current.clone();
    let sealed = tampered.sealed.take().unwrap();
    let flipped = if sealed.starts_with('A') { "B" } else { "A" };
    tampered.sealed = Some(format!("{flipped}{}", &sealed[1..]));
    publish_envelope(&stack, &tampered).await?;
    refused(a.clone(), "does not open").await?;
    let mut moved = current.clone();
    moved.site = b.clone();
    publish_envelope(&stack, &moved).await?;
    refused(b.clone(), "another key").await?;
    stack
        .eventually("refusals counted in heartbeats", || async {
            Ok(stack.site_summary(0).await?.secrets_refused >= 2 && stack.site_summary(1).await?.secrets_refused >= 1)
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for site in [&a, &b] {
        let ctr = &stack.containers(site, &app).await?[0];
        assert_eq!(cat(&ctr.id, "/run/secrets/db-password")?, pw2, "a refused box changes nothing");
    }

    // Undeploy: containers and secret files go, and the sites' streams hold no ciphertext.
    stack.delete(&app).await?;
    stack.wait_running(&[&a, &b], &app, 0).await?;
    for i in [0, 1] {
        let site_js = stack.site_js(i).await?;
        let site = stack.site(i).clone();
        stack
            .eventually("the site's copies withdrawn", || async {
                let js = site_js.clone();
                let streams = all_streams(&js).await?;
                Ok(streams.iter().all(|(subject, body)| !holds_sealed_secret(subject, body)))
            })
            .await?;
        let prefix = format!("edge-{site}-");
        let left = || -> Vec<String> {
            std::fs::read_dir(&stack.secrets_dir)
                .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default()
        };
        // Removed by the site's pass after the containers are gone.
        let removed = stack.eventually("the site's secret files removed", || async {
            Ok(left().iter().all(|n| !n.starts_with(&prefix)))
        });
        removed.await.map_err(|e| anyhow::anyhow!("{e}; secret files left at {site}: {:?}", left()))?;
    }

    // The trail: stored, rotated, distributed, withdrawn centrally; read and refused at the sites.
    let trail = audits(&stack).await?;
    let count = |action: AuditAction| trail.iter().filter(|e| e.action == action).count();
    assert_eq!(count(AuditAction::Stored), 2);
    assert_eq!(count(AuditAction::Rotated), 2);
    assert!(count(AuditAction::Distributed) >= 6, "two secrets to two sites, rotated: {trail:?}");
    assert!(count(AuditAction::Withdrawn) >= 4);
    assert!(count(AuditAction::Read) >= 4);
    assert!(trail.iter().filter(|e| e.action == AuditAction::Stored).all(|e| e.actor == "e2e"));

    // No plaintext anywhere: hub streams and buckets, every site's, every log line.
    let hub_js = edge_bus::topology::hub_js(&stack.client);
    let mut everything = all_streams(&hub_js).await?;
    for i in 0..3 {
        everything.extend(all_streams(&stack.site_js(i).await?).await?);
    }
    ensure!(everything.len() > 20, "streams were read");
    for value in [&pw, &pw2, &token, &token2] {
        for (subject, body) in &everything {
            assert!(!contains(body, value), "plaintext in {subject}");
        }
        let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
        assert!(!logs.is_empty(), "logs were captured");
        let leaks: Vec<&str> =
            logs.lines().filter(|l| l.contains(value.as_str())).map(|l| &l[..l.len().min(300)]).collect();
        assert!(leaks.is_empty(), "plaintext in the logs: {leaks:?}");
    }
    Ok(())
}

#[tokio::test]
async fn bad_secret_requests_are_refused_naming_the_field() -> Result<()> {
    let stack = Stack::start(&[]).await?;
    let err = |r: Result<edge_types::secret::SecretInfo, edge_bus::api::RequestError>| match r {
        Err(edge_bus::api::RequestError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    };
    let big = "x".repeat(70_000);
    let e = err(stack.secret(ApiOp::SecretPut, "big", &big).await);
    assert_eq!(e.pointer.as_deref(), Some("/value"), "{e:?}");
    let e = err(stack.secret(ApiOp::SecretPut, "Bad_Name", "v").await);
    assert_eq!(e.pointer.as_deref(), Some("/name"), "{e:?}");
    let e = err(stack.secret(ApiOp::SecretRotate, "never-stored", "v").await);
    assert_eq!(e.code, edge_types::api::ErrorCode::NotFound);
    stack.secret(ApiOp::SecretPut, "once", "first").await?;
    let e = err(stack.secret(ApiOp::SecretPut, "once", "second-value").await);
    assert_eq!(e.code, edge_types::api::ErrorCode::Conflict);
    assert!(!e.message.contains("second-value"), "errors never echo a value: {}", e.message);

    let spec = json!({
        "name": "uses-missing", "version": "1", "placement": {"sites": ""},
        "services": [{"name": "api", "image": "edge/busybox:v1", "secrets": [{"name": "nope"}]}]
    });
    match stack.apply(&spec).await {
        Err(edge_bus::api::RequestError::Api(e)) => {
            assert_eq!(e.pointer.as_deref(), Some("/services/0/secrets/0/name"), "{e:?}")
        }
        other => panic!("apply with an unknown secret: {other:?}"),
    }
    let info = stack.secret_describe("once").await?;
    assert_eq!(info.version, 1, "refused requests changed nothing");
    assert_eq!(info.versions[0].created_by, "e2e");

    // Deleted and put again, a secret continues its versions (a site never sees an old number).
    let _: edge_types::secret::SecretDeleteReply =
        edge_bus::api::request(&stack.client, ApiOp::SecretDelete, &json!({"name": "once"}), Duration::from_secs(10))
            .await?;
    assert_eq!(stack.secret(ApiOp::SecretPut, "once", "again").await?.version, 2);
    Ok(())
}

#[tokio::test]
async fn every_host_of_a_site_opens_its_secrets_also_with_the_wan_down() -> Result<()> {
    let mut stack = Stack::start_sites(&[(&[], &[("h1", &[]), ("h2", &[])])], |_| {}).await?;
    let site = stack.site(0).clone();
    stack.eventually("both hosts registered", || async { Ok(stack.site_summary(0).await?.hosts.len() == 2) }).await?;
    let value = unique("plain-shared");
    stack.secret(ApiOp::SecretPut, "shared", &value).await?;
    let app = unique("everywhere");
    let spec = json!({
        "name": app, "version": "1", "placement": {"sites": ""},
        "services": [{
            "name": "agent", "image": "edge/busybox:v1", "command": ["sleep", "3600"],
            "mode": "one-per-matching-host", "secrets": [{"name": "shared"}]
        }]
    });
    stack.apply(&spec).await?;
    stack.wait_running(&[&site], &app, 2).await?;
    let on_hosts = |containers: &[Container]| -> Result<Vec<String>> {
        let mut hosts = Vec::new();
        for c in containers {
            ensure!(cat(&c.id, "/run/secrets/shared")? == value, "host {} lacks the secret", c.host);
            hosts.push(c.host.clone());
        }
        hosts.sort();
        Ok(hosts)
    };
    assert_eq!(on_hosts(&stack.containers(&site, &app).await?)?, ["h1", "h2"], "both hosts opened it");

    // With the WAN down, h2 loses power and comes back: its site-manager opens the secret again
    // from what the site holds (its key in the site's bucket, the sealed secret in its stream).
    stack.cut(0).await?;
    stack.sites[0].kill_host(1).await;
    stack.power_off_containers(&site, "h2").await?;
    stack.sites[0].start_host(1);
    stack
        .eventually("h2's container back with its secret, WAN down", || async {
            let c = stack.containers(&site, &app).await?;
            Ok(c.len() == 2 && c.iter().all(|c| c.running) && on_hosts(&c).is_ok())
        })
        .await?;
    stack.restore(0).await?;

    // A new site key reaches both hosts: after it, a new value opens and runs on each.
    let old_key = envelope(&stack, &site, "shared").await?.recipient;
    let _: edge_types::secret::SiteRekey =
        edge_bus::api::request(&stack.client, ApiOp::SiteRotateKey, &json!({"site": site}), Duration::from_secs(10))
            .await?;
    stack
        .eventually("re-sealed to the new site key", || async {
            Ok(envelope(&stack, &site, "shared").await?.recipient != old_key)
        })
        .await?;
    let value = unique("plain-shared2");
    stack.secret(ApiOp::SecretRotate, "shared", &value).await?;
    stack
        .eventually("both hosts run the new value", || async {
            let c = stack.containers(&site, &app).await?;
            let mut ok = c.len() == 2;
            for c in &c {
                ok &= c.running && cat(&c.id, "/run/secrets/shared").is_ok_and(|v| v == value);
            }
            Ok(ok)
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_rotated_site_key_reseals_what_the_site_holds() -> Result<()> {
    let stack = Stack::start(&[&[]]).await?;
    let site = stack.site(0).clone();
    stack.secret(ApiOp::SecretPut, "cert", &unique("plain-cert")).await?;
    let app = unique("keyed");
    let spec = json!({
        "name": app, "version": "1", "placement": {"sites": ""},
        "services": [{
            "name": "web", "image": "edge/busybox:v1", "command": ["sleep", "3600"],
            "secrets": [{"name": "cert", "on_rotate": "in-place"}]
        }]
    });
    stack.apply(&spec).await?;
    stack.wait_running(&[&site], &app, 1).await?;
    let old_key = envelope(&stack, &site, "cert").await?.recipient;
    let container = stack.containers(&site, &app).await?[0].id.clone();

    let _: edge_types::secret::SiteRekey =
        edge_bus::api::request(&stack.client, ApiOp::SiteRotateKey, &json!({"site": site}), Duration::from_secs(10))
            .await?;
    stack
        .eventually("the secret re-sealed to the site's new key", || async {
            Ok(envelope(&stack, &site, "cert").await?.recipient != old_key)
        })
        .await?;
    // The site opens what is sealed to its new key: a new value reaches the running container.
    let value = unique("plain-cert2");
    stack.secret(ApiOp::SecretRotate, "cert", &value).await?;
    stack
        .eventually("the new value in the container", || async {
            Ok(cat(&container, "/run/secrets/cert").is_ok_and(|v| v == value))
        })
        .await?;
    assert_eq!(stack.containers(&site, &app).await?[0].id, container, "a key rotation restarts nothing");
    let refused = audits(&stack).await?.iter().filter(|e| e.action == AuditAction::Rejected).count();
    assert_eq!(refused, 0, "nothing was refused during the rotation");
    Ok(())
}
