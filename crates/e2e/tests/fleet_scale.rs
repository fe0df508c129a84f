//! What breaks only past a thousand sites, on a real hub: every site's source of DESIRED is a
//! consumer of that stream (nats-server 2.15 allows a stream 1,000 unless it says otherwise),
//! and listing a bucket of thousands of keys.

use std::time::Duration;

use anyhow::Result;
use async_nats::jetstream::consumer;
use edge_bus::topology::{self, STREAM_DESIRED};
use edge_testkit::NatsServer;
use edge_types::{subject, Name};
use futures::StreamExt;

const SITES: usize = 1_100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_than_a_thousand_sites_follow_their_desired_state_and_list() -> Result<()> {
    let hub = NatsServer::hub().await?;
    let client = async_nats::connect(hub.url()).await?;
    let js = topology::hub_js(&client);
    let buckets = topology::ensure_hub(&js).await?;
    let stream = js.get_stream(STREAM_DESIRED).await?;

    let sites: Vec<Name> = (0..SITES).map(|i| Name::site(format!("scale-{i:04}"))).collect::<Result<_, _>>()?;
    let mut last = None;
    for site in &sites {
        let c = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: client.new_inbox(),
                filter_subject: subject::desired_for_site(site),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("the source of site {site} was refused: {e}"))?;
        last = Some(c);
    }
    // The last site to join still receives what is written for it.
    let site = sites.last().expect("sites");
    let mut messages = last.expect("a consumer").messages().await?;
    let app = Name::new("probe")?;
    js.publish(subject::desired(site, &app), "{}".into()).await?.await?;
    let m = tokio::time::timeout(Duration::from_secs(10), messages.next()).await?.expect("a message")?;
    assert_eq!(m.subject.as_str(), subject::desired(site, &app));

    // A bucket of more than a thousand keys lists whole, deleted keys left out.
    for site in &sites {
        buckets.sites.put(site.as_str(), serde_json::to_vec(&serde_json::json!({"n": site}))?.into()).await?;
    }
    buckets.sites.delete(sites[0].as_str()).await?;
    let listed: Vec<(String, serde_json::Value)> = edge_bus::kv::list(&buckets.sites, "").await?;
    assert_eq!(listed.len(), SITES - 1);
    assert!(listed.iter().all(|(k, _)| k != sites[0].as_str()), "a deleted key was listed");
    let some: Vec<(String, serde_json::Value)> = edge_bus::kv::list(&buckets.sites, "scale-10").await?;
    assert_eq!(some.len(), 100, "keys starting scale-10");
    // Listing leaves no consumer behind (the bucket's stream allows 1,000 by default).
    let mut kv_stream = buckets.sites.stream.clone();
    assert_eq!(kv_stream.info().await?.state.consumer_count, 0, "listing left its consumers");
    Ok(())
}
