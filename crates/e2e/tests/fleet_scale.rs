//! What breaks only past a thousand sites, on a real hub: every site's source of its desired
//! state is a consumer of its shard's stream (nats-server 2.15 allows a stream 1,000 unless it
//! says otherwise; 32 shards reach that past 32,000 sites, here made with sites of one shard),
//! and listing a bucket of thousands of keys.

use std::time::Duration;

use anyhow::Result;
use async_nats::jetstream::consumer;
use edge_bus::topology;
use edge_testkit::NatsServer;
use edge_types::{subject, Name};
use futures::StreamExt;

const SITES: usize = 1_100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_than_a_thousand_sites_follow_their_desired_state_and_list() -> Result<()> {
    let hub = NatsServer::hub().await?;
    let client = hub.connect().await?;
    let js = topology::hub_js(&client);
    let buckets = topology::ensure_hub(&js).await?;

    // Sites that all fall in one shard, so that one stream has more than a thousand sources.
    let all: Vec<Name> =
        (0..).map(|i| Name::site(format!("scale-{i:05}"))).take(40 * SITES).collect::<Result<_, _>>()?;
    let sites: Vec<Name> = all.into_iter().filter(|s| subject::desired_shard(s) == 0).take(SITES).collect();
    assert_eq!(sites.len(), SITES);
    let stream = js.get_stream(topology::desired_stream(0)).await?;
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
    let prefix = &sites[1].as_str()[..9];
    let some: Vec<(String, serde_json::Value)> = edge_bus::kv::list(&buckets.sites, prefix).await?;
    let expected = sites[1..].iter().filter(|s| s.as_str().starts_with(prefix)).count();
    assert_eq!(some.len(), expected, "keys starting {prefix}");
    // Listing leaves no consumer behind (the bucket's stream allows 1,000 by default).
    let mut kv_stream = buckets.sites.stream.clone();
    assert_eq!(kv_stream.info().await?.state.consumer_count, 0, "listing left its consumers");
    Ok(())
}

/// A hub of the layout before the desired state was sharded (one stream `DESIRED` binding every
/// desired-state subject) is refused with what to do, and left as it was.
#[tokio::test]
async fn a_hub_of_the_unsharded_layout_is_refused_with_what_to_do() -> Result<()> {
    use async_nats::jetstream::stream;
    let hub = NatsServer::hub().await?;
    let client = hub.connect().await?;
    let js = topology::hub_js(&client);
    js.create_stream(stream::Config {
        name: topology::STREAM_DESIRED.into(),
        subjects: vec!["edge.v1.desired.>".into()],
        ..Default::default()
    })
    .await?;
    let err = match topology::ensure_hub(&js).await {
        Ok(_) => anyhow::bail!("a hub with the unsharded DESIRED stream was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("stream DESIRED") && err.contains("remove it"), "unclear refusal: {err}");
    assert!(js.get_stream(topology::desired_stream(0)).await.is_err(), "a shard stream was made anyway");
    Ok(())
}
