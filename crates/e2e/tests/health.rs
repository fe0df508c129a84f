//! Every central service besides the scheduler registers with the NATS service API and answers
//! health.

use std::time::Duration;

use anyhow::Result;
use edge_testkit::NatsServer;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn secrets_registry_sync_and_telemetry_answer_ping_and_health() -> Result<()> {
    let hub = NatsServer::hub().await?;
    let shutdown = CancellationToken::new();
    let url = hub.url();
    let (url_for_secrets, sd_secrets) = (url.clone(), shutdown.clone());
    let creds_secrets = hub.user_creds("secrets")?;
    let mut tasks = tokio::task::JoinSet::new();
    let keys = tempfile::tempdir()?;
    tasks.spawn(async move {
        let mut config = secrets::Config::new(url_for_secrets, keys.path().join("master.key"));
        config.nats_creds = Some(creds_secrets);
        secrets::run(config, sd_secrets).await.map_err(|e| e.to_string())
    });
    let mut registry = registry_sync::Config::new(url.clone());
    registry.nats_creds = Some(hub.user_creds("registry-sync")?);
    let sd = shutdown.clone();
    tasks.spawn(async move { registry_sync::run(registry, sd).await.map_err(|e| e.to_string()) });
    let mut telemetry = telemetry::Config::new(url.clone(), "127.0.0.1:0");
    telemetry.nats_creds = Some(hub.user_creds("telemetry")?);
    let sd = shutdown.clone();
    tasks.spawn(async move { telemetry::run(telemetry, sd).await.map_err(|e| e.to_string()) });

    let client = hub.connect().await?;
    for name in ["secrets", "registry-sync", "telemetry"] {
        let mut health = None;
        for _ in 0..100 {
            if let Ok(msg) = client.request(format!("edge.v1.{name}.health"), "".into()).await {
                health = Some(serde_json::from_slice::<serde_json::Value>(&msg.payload)?);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let health = health.expect("health answered");
        assert_eq!(health["status"], "ok");
        assert_eq!(health["service"], name);

        let inbox = client.new_inbox();
        let mut replies = client.subscribe(inbox.clone()).await?;
        client.publish_with_reply(format!("$SRV.PING.{name}"), inbox, "".into()).await?;
        let ping = tokio::time::timeout(Duration::from_secs(5), replies.next()).await?.unwrap();
        let ping: serde_json::Value = serde_json::from_slice(&ping.payload)?;
        assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");
        assert_eq!(ping["name"], name);
    }

    shutdown.cancel();
    while let Some(r) = tasks.join_next().await {
        r?.map_err(anyhow::Error::msg)?;
    }
    Ok(())
}
