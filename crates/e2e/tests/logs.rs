//! Logs on demand: one request fans out to every host of a site over the leaf link; each host
//! answers with its containers' lines (tail, grep) and `done`; a follow streams new lines while
//! it is renewed. Logs stay at the site until asked for.

mod support;

use std::time::Duration;

use anyhow::Result;
use edge_testkit::unique;
use edge_types::logs::LogChunk;
use futures::StreamExt;
use serde_json::json;
use support::*;

/// Sends a log request to a site and gathers chunks until `hosts` said done (or `wait` passed).
async fn fetch(
    stack: &Stack,
    site: &edge_types::Name,
    req: serde_json::Value,
    hosts: usize,
    wait: Duration,
) -> Result<Vec<LogChunk>> {
    let inbox = stack.client.new_inbox();
    let mut sub = stack.client.subscribe(inbox.clone()).await?;
    stack.client.publish_with_reply(format!("edge.v1.logs.{site}"), inbox, serde_json::to_vec(&req)?.into()).await?;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await {
        let c: LogChunk = serde_json::from_slice(&m.payload)?;
        let done = c.done;
        out.push(c);
        if done && out.iter().filter(|c| c.done).count() == hosts && !req["follow"].as_bool().unwrap_or(false) {
            break;
        }
    }
    Ok(out)
}

fn lines(chunks: &[LogChunk]) -> Vec<String> {
    chunks.iter().flat_map(|c| c.lines.clone()).collect()
}

#[tokio::test]
async fn logs_come_from_every_host_of_a_site_on_demand() -> Result<()> {
    let stack = Stack::start_sites(&[(&[], &[("h1", &[]), ("h2", &[])])], |_| {}).await?;
    let site = stack.site(0).clone();
    stack.eventually("both hosts registered", || async { Ok(stack.site_summary(0).await?.hosts.len() == 2) }).await?;
    let app = unique("talker");
    let script = "echo hello-from-$(hostname); echo noise; while true; do echo tick; sleep 1; done";
    stack
        .apply(&json!({
            "name": app, "version": "1", "placement": {"sites": ""},
            "services": [{"name": "say", "image": "edge/busybox:v1", "command": ["sh", "-c", script],
                          "mode": "one-per-matching-host"}]
        }))
        .await?;
    stack.wait_running(&[&site], &app, 2).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Both hosts answer with their container's lines; grep keeps only matching ones.
    let all = fetch(&stack, &site, json!({"app": app, "session": "t1"}), 2, Duration::from_secs(10)).await?;
    let mut hosts: Vec<String> = all.iter().filter(|c| c.done).map(|c| c.host.to_string()).collect();
    hosts.sort();
    assert_eq!(hosts, ["h1", "h2"]);
    let got = lines(&all);
    assert_eq!(got.iter().filter(|l| l.starts_with("hello-from-")).count(), 2, "{got:?}");
    assert!(got.iter().any(|l| l == "noise") && got.iter().any(|l| l == "tick"));
    assert!(all
        .iter()
        .filter(|c| !c.lines.is_empty())
        .all(|c| c.service.as_ref().is_some_and(|s| s.as_str() == "say")));
    let hello =
        fetch(&stack, &site, json!({"app": app, "session": "t2", "grep": "hello"}), 2, Duration::from_secs(10)).await?;
    assert!(
        lines(&hello).iter().all(|l| l.starts_with("hello-from-")) && lines(&hello).len() == 2,
        "{:?}",
        lines(&hello)
    );
    let last =
        fetch(&stack, &site, json!({"app": app, "session": "t3", "tail": 1}), 2, Duration::from_secs(10)).await?;
    assert_eq!(lines(&last).len(), 2, "one line per container: {:?}", lines(&last));

    // A follow streams new lines from both hosts.
    let followed = fetch(
        &stack,
        &site,
        json!({"app": app, "session": "f1", "follow": true, "tail": 1, "grep": "tick"}),
        2,
        Duration::from_secs(5),
    )
    .await?;
    let streamed: Vec<&LogChunk> = followed.iter().filter(|c| !c.done).collect();
    assert!(streamed.len() >= 4, "new lines arrive while following: {}", streamed.len());
    let mut from: Vec<String> = streamed.iter().map(|c| c.host.to_string()).collect();
    from.sort();
    from.dedup();
    assert_eq!(from, ["h1", "h2"]);

    // A bad request gets an error chunk, not silence.
    let bad = fetch(&stack, &site, json!({"app": "Bad_Name", "session": "b"}), 2, Duration::from_secs(5)).await?;
    assert!(bad.iter().all(|c| c.done && c.error.as_deref().is_some_and(|e| e.contains("/app"))), "{bad:?}");
    Ok(())
}
