//! Applications on the bus (`bus.topics` in the spec): a container publishes to its topic at
//! its site, through a WAN cut, and every message reaches the hub once the link is back
//! (`edgectl events`); an application's credential opens its own topics only, as the site's
//! server enforces; a topic that is full refuses more (back-pressure) without touching
//! another application's topic.

mod support;

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use edge_testkit::unique;
use edge_types::topic::TopicEvent;
use serde_json::json;
use support::{edgectl, Stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Publishes `n=1`, `n=2`, ... to the app's topic `readings`, one message per connection,
/// counting a message only when the server answered without an error: the simplest client
/// there is (busybox `nc` with the bearer credential).
const PUBLISHER: &str = r#"
jwt=$(sed -n 2p "$EDGE_BUS_CREDS"); addr=${EDGE_BUS_URL#nats://}; host=${addr%:*}; port=${addr##*:}
i=1
while true; do
  msg="n=$i"
  out=$(printf 'CONNECT {"jwt":"%s","verbose":false,"pedantic":false,"protocol":1}\r\nPUB %s.readings %d\r\n%s\r\nPING\r\n' \
    "$jwt" "$EDGE_BUS_SUBJECT_PREFIX" ${#msg} "$msg" | nc -w 1 "$host" "$port" 2>&1)
  case "$out" in
    *-ERR*) echo "refused: $out" ;;
    *PONG*) echo "sent $i"; i=$((i+1)) ;;
    *) echo "no answer: $out" ;;
  esac
  sleep 0.3
done
"#;

fn publisher(name: &str, topics: serde_json::Value) -> serde_json::Value {
    json!({
        "name": name,
        "version": "1.0.0",
        "services": [{
            "name": "main",
            "image": "edge/busybox:v1",
            "command": ["sh", "-c", PUBLISHER],
            "resources": {"cpus": 0.1, "memory_mb": 32}
        }],
        "placement": {"sites": ""},
        "bus": {"topics": topics}
    })
}

/// The `n` of every message of `app`'s topic `readings` at the hub, as `edgectl events` prints them.
fn received(stack: &Stack, app: &str) -> Result<Vec<u64>> {
    let out = edgectl(&stack.hub, &["-o", "json", "events", app, "--topic", "readings"])?;
    out.lines()
        .map(|l| {
            let e: TopicEvent = serde_json::from_str(l)?;
            let data = e.data.context("text payload")?;
            Ok(data.strip_prefix("n=").context("n=")?.parse()?)
        })
        .collect()
}

/// The stored messages of a stream at site `i`.
async fn stored_at_site(stack: &Stack, i: usize, stream: &str) -> Result<u64> {
    let js = stack.site_js(i).await?;
    Ok(js.get_stream(stream).await?.info().await?.state.messages)
}

/// Says `commands` to the site's leaf server as a client presenting `jwt`; what it answered, up
/// to `until`.
async fn raw_nats(addr: &str, jwt: &str, commands: &str, until: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let connect = format!("CONNECT {{\"jwt\":\"{jwt}\",\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\n");
    s.write_all(format!("{connect}{commands}PING\r\n").as_bytes()).await?;
    let mut answer = String::new();
    let mut buf = [0u8; 4096];
    while !answer.contains(until) && !answer.contains("Authorization Violation") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await??;
        ensure!(n > 0, "the server closed the connection: {answer}");
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    Ok(answer)
}

/// The bus credential of `app`'s first replica at site `i` (host-1), as written for it.
fn creds_of(stack: &Stack, i: usize, app: &str) -> Result<edge_auth::Creds> {
    let container = format!("edge-{}-host-1-{app}-main-0", stack.site(i));
    let path = stack.secrets_dir.join(container).join("edge-bus.creds");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok(edge_auth::Creds::parse(&text)?)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_publishes_through_a_wan_cut_and_the_hub_receives_every_message() -> Result<()> {
    let stack = Stack::start(&[&[("region", "eu")]]).await?;
    let app = unique("pub");
    stack.apply(&publisher(&app, json!([{"name": "readings"}]))).await?;
    stack.wait_running(&[stack.site(0)], &app, 1).await?;
    let env = &stack.containers(stack.site(0), &app).await?[0].env;
    for var in
        ["EDGE_BUS_URL=nats://", "EDGE_BUS_CREDS=/run/secrets/", "EDGE_SITE=", "EDGE_BUS_INBOX_PREFIX=_INBOX.app."]
    {
        ensure!(env.iter().any(|e| e.starts_with(var)), "no {var} in {env:?}");
    }
    ensure!(!env.iter().any(|e| e.contains("SUSECRET") || e.contains("eyJ")), "a credential in the environment");
    stack.eventually("the first messages at the hub", || async { Ok(received(&stack, &app)?.len() >= 3) }).await?;

    stack.cut(0).await?;
    let stream = format!("TOPIC_default_{app}_readings");
    let at_cut = stored_at_site(&stack, 0, &stream).await?;
    stack
        .eventually("the site buffering while cut off", || async {
            Ok(stored_at_site(&stack, 0, &stream).await? >= at_cut + 10)
        })
        .await?;
    let buffered = stored_at_site(&stack, 0, &stream).await?;
    let before = received(&stack, &app)?.len() as u64;
    ensure!(before < buffered, "the hub received messages through a cut link ({before} of {buffered})");

    stack.restore(0).await?;
    stack
        .eventually("every buffered message at the hub", || async {
            Ok(received(&stack, &app)?.len() as u64 >= buffered)
        })
        .await?;
    let got = received(&stack, &app)?;
    let distinct: BTreeSet<u64> = got.iter().copied().collect();
    ensure!(distinct.len() == got.len(), "a message arrived twice");
    let max = *distinct.last().unwrap_or(&0);
    ensure!(distinct == (1..=max).collect(), "a message is missing: {got:?}");

    // One site only, and following: what arrives next is printed once.
    let one = edgectl(
        &stack.hub,
        &["events", &app, "--topic", "readings", "--site", stack.site(0).as_str(), "--since", "1h", "--limit", "2"],
    )?;
    ensure!(one.lines().count() == 2 && one.contains(stack.site(0).as_str()), "{one}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_credential_opens_its_own_topics_and_a_full_topic_pushes_back() -> Result<()> {
    let stack = Stack::start(&[&[("region", "eu")]]).await?;
    let mut telemetry = stack.telemetry_config(format!("127.0.0.1:{}", edge_bus::natsconf::free_port()?));
    telemetry.alert_every_secs = 1;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _telemetry = tokio::spawn(telemetry::run(telemetry, shutdown.clone()));
    let _stop = shutdown.drop_guard();
    let (a, b) = (unique("bus-a"), unique("bus-b"));
    // Topic names are checked before anything happens.
    for (topics, field) in [
        (json!([{"name": "a.b"}]), "/bus/topics/0/name"),
        (json!([{"name": "x"}, {"name": "x"}]), "/bus/topics/1/name"),
        (json!([{"name": "x", "max_bytes": 4096, "max_msg_size": 8192}]), "/bus/topics/0/max_msg_size"),
    ] {
        let at = support::refused_at(stack.apply(&publisher(&a, topics)).await);
        ensure!(at == field, "refused at {at:?}, not {field}");
    }
    stack.apply(&publisher(&a, json!([{"name": "readings"}]))).await?;
    // B's topic keeps five messages: its publisher fills it at once.
    stack.apply(&publisher(&b, json!([{"name": "readings", "max_msgs": 5}]))).await?;
    stack.wait_running(&[stack.site(0)], &a, 1).await?;
    stack.wait_running(&[stack.site(0)], &b, 1).await?;
    let leaf = stack.sites[0].leaf.url().trim_start_matches("nats://").to_string();
    let b_jwt = creds_of(&stack, 0, &b)?.jwt;

    // B may not read or write A's topic, nor use the JetStream API, nor the site's own subjects.
    let a_topic = format!("edge.v1.topic.default.{a}.readings");
    let answer = raw_nats(
        &leaf,
        &b_jwt,
        &format!(
            "SUB {a_topic} 1\r\nPUB {a_topic} 2\r\nhi\r\nPUB $JS.API.STREAM.INFO.TOPIC_default_{a}_readings 0\r\n\r\nSUB edge.v1.> 2\r\n"
        ),
        "PONG",
    )
    .await?;
    for refused in [
        format!("Permissions Violation for Subscription to \"{a_topic}\""),
        format!("Permissions Violation for Publish to \"{a_topic}\""),
        format!("Permissions Violation for Publish to \"$JS.API.STREAM.INFO.TOPIC_default_{a}_readings\""),
        "Permissions Violation for Subscription to \"edge.v1.>\"".to_string(),
    ] {
        ensure!(answer.contains(&refused), "not refused: {refused}\nthe server said: {answer}");
    }
    let stored = stored_at_site(&stack, 0, &format!("TOPIC_default_{a}_readings")).await?;

    // B's topic is full: its publisher is refused, A's goes on, the site's own streams too.
    stack
        .eventually("B's topic full", || async {
            Ok(stored_at_site(&stack, 0, &format!("TOPIC_default_{b}_readings")).await? == 5)
        })
        .await?;
    // Published with a reply subject, JetStream answers: here, with the refusal.
    let full = raw_nats(
        &leaf,
        &b_jwt,
        &format!("SUB _INBOX.app.default.{b}.x 1\r\nPUB edge.v1.topic.default.{b}.readings _INBOX.app.default.{b}.x 3\r\none\r\n"),
        "maximum messages",
    )
    .await?;
    ensure!(full.contains("maximum messages"), "a full topic took a message: {full}");
    // And the operator hears of it.
    stack
        .eventually("the topic_nearly_full alert", || async {
            let alerts = edgectl(&stack.hub, &["alerts"])?;
            Ok(alerts
                .lines()
                .any(|l| l.contains("topic_nearly_full") && l.contains(&b) && l.contains("refuses new messages")))
        })
        .await?;
    stack
        .eventually("A's topic still taking messages", || async {
            Ok(stored_at_site(&stack, 0, &format!("TOPIC_default_{a}_readings")).await? > stored + 3)
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn central_messages_reach_the_app_at_its_site_after_a_cut() -> Result<()> {
    use async_nats::jetstream::consumer::pull;
    let stack = Stack::start(&[&[("region", "eu")]]).await?;
    let site = stack.site(0).clone();
    let app = unique("orders");
    let mut spec = support::sleeper(&app, "", "edge/busybox:v1", &[]);
    spec["bus"] = json!({"topics": [{"name": "commands", "direction": "to_sites"}, {"name": "readings"}]});
    stack.apply(&spec).await?;
    stack.wait_running(&[&site], &app, 1).await?;
    let sent = edgectl(&stack.hub, &["send", &app, "--topic", "commands", "first"])?;
    ensure!(sent.contains(site.as_str()), "{sent}");

    // Sent while the site is cut off: kept at the hub; sent twice with one id: stored once.
    stack.cut(0).await?;
    for _ in 0..2 {
        edgectl(&stack.hub, &["send", &app, "--topic", "commands", "--id", "c2", "second"])?;
    }
    // A topic is read only where its messages go.
    let wrong = edgectl(&stack.hub, &["events", &app, "--topic", "commands"]).unwrap_err().to_string();
    ensure!(wrong.contains("to_sites"), "{wrong}");
    let wrong = edgectl(&stack.hub, &["send", &app, "--topic", "readings", "x"]).unwrap_err().to_string();
    ensure!(wrong.contains("to_hub"), "{wrong}");
    stack.restore(0).await?;

    // The app reads them at its site with its own credential, as its containers would.
    let creds = creds_of(&stack, 0, &app)?;
    let client = async_nats::ConnectOptions::with_credentials(&creds.render())?
        .custom_inbox_prefix(format!("_INBOX.app.default.{app}"))
        .connect(stack.sites[0].leaf.url())
        .await?;
    let js = async_nats::jetstream::new(client);
    let name = format!("TOPIC_default_{app}_commands");
    stack
        .eventually("both messages at the site", || async {
            Ok(js.get_stream(&name).await?.info().await?.state.messages == 2)
        })
        .await?;
    let stream = js.get_stream(&name).await?;
    let reader =
        stream.create_consumer(pull::Config { durable_name: Some("reader".into()), ..Default::default() }).await?;
    let mut got = Vec::new();
    let mut batch = reader.fetch().max_messages(10).expires(std::time::Duration::from_secs(2)).messages().await?;
    while let Some(m) = futures::StreamExt::next(&mut batch).await {
        let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
        got.push(String::from_utf8(m.payload.to_vec())?);
        m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    ensure!(got == ["first", "second"], "{got:?}");
    // Nothing else at the site is open to it.
    ensure!(js.get_stream("SITE_EVENTS").await.is_err(), "the app read the site's own stream");
    Ok(())
}
