//! Registration with the NATS service API (`$SRV.PING/INFO/STATS`) plus a `health` endpoint,
//! for services whose capabilities have not landed yet: they answer health and nothing else.

use async_nats::service::ServiceExt;
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
    service: &'a str,
    version: &'a str,
}

/// The body of a health reply.
pub fn health_body(name: &str, version: &str) -> Vec<u8> {
    serde_json::to_vec(&Health { status: "ok", service: name, version }).expect("health serializes")
}

/// Serves `edge.v1.<name>.health` until `shutdown` is cancelled.
pub async fn serve_health(
    client: &async_nats::Client,
    name: &str,
    version: &str,
    description: &str,
    shutdown: CancellationToken,
) -> Result<(), async_nats::Error> {
    let service = client.service_builder().description(description).start(name, version).await?;
    let mut endpoint = service.group(format!("{}.{name}", edge_types::subject::PREFIX)).endpoint("health").await?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            req = endpoint.next() => {
                let Some(req) = req else { break };
                let body = health_body(name, version);
                if let Err(e) = req.respond(Ok(body.into())).await {
                    tracing::warn!(error = %e, "health reply failed");
                }
            }
        }
    }
    crate::shutdown::bounded("stopping the service API", service.stop()).await.transpose()?;
    Ok(())
}
