//! Typed request/reply over the NATS service API. Errors travel as the standard
//! `Nats-Service-Error` / `Nats-Service-Error-Code` headers plus an [`ApiError`] JSON body.

use std::time::Duration;

use async_nats::service::{Request, NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use async_nats::HeaderMap;
use edge_types::api::{ApiError, ErrorCode};
use edge_types::schema::{decode, DecodeError, Message};
use edge_types::subject::ApiOp;
use serde::Serialize;

/// Parses a request body against its schema, turning a violation into an `invalid_request`
/// error that names the field.
pub fn parse_request<T: Message>(req: &Request) -> Result<T, ApiError> {
    decode::<T>(&req.message.payload).map_err(invalid)
}

/// The API error for a decode failure.
pub fn invalid(e: DecodeError) -> ApiError {
    let pointer = e.pointer().to_string();
    ApiError { code: ErrorCode::InvalidRequest, message: format!("invalid request: {e}"), pointer: Some(pointer) }
}

/// Sends the reply of a request: the value as JSON, or the error with service-error headers.
pub async fn respond<T: Serialize>(req: &Request, result: Result<T, ApiError>) {
    let (body, headers) = match result {
        Ok(v) => (serde_json::to_vec(&v).expect("replies serialize"), HeaderMap::new()),
        Err(e) => {
            let mut h = HeaderMap::new();
            h.insert(NATS_SERVICE_ERROR, e.message.replace(['\r', '\n'], " ").as_str());
            h.insert(NATS_SERVICE_ERROR_CODE, e.code.numeric().to_string().as_str());
            (serde_json::to_vec(&e).expect("errors serialize"), h)
        }
    };
    if let Err(e) = req.respond_with_headers(Ok(body.into()), headers).await {
        tracing::warn!(error = %e, "could not send reply");
    }
}

/// Why a request made with [`request`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Api(ApiError),
    #[error("no service answers on {subject}: is the {service} service running?")]
    NoResponders { subject: String, service: &'static str },
    #[error("request on {0} timed out")]
    Timeout(String),
    #[error("request on {subject} failed: {message}")]
    Transport { subject: String, message: String },
    #[error("reply on {subject} is not understood: {message}")]
    BadReply { subject: String, message: String },
}

/// Sends `body` to an API operation and decodes the typed reply.
pub async fn request<Req: Serialize, Resp: Message>(
    client: &async_nats::Client,
    op: ApiOp,
    body: &Req,
    timeout: Duration,
) -> Result<Resp, RequestError> {
    let payload = serde_json::to_vec(body).expect("requests serialize");
    request_raw(client, op, payload, timeout).await
}

/// [`request`] made by `site`, for an operation whose subject names the caller's site
/// ([`ApiOp::per_site`], call-home).
pub async fn request_as_site<Req: Serialize, Resp: Message>(
    client: &async_nats::Client,
    op: ApiOp,
    site: &edge_types::Name,
    body: &Req,
    timeout: Duration,
) -> Result<Resp, RequestError> {
    let payload = serde_json::to_vec(body).expect("requests serialize");
    request_at(client, op, op.subject_for(site), payload, timeout).await
}

/// Sends raw bytes (for example a user's file, unparsed) and decodes the typed reply.
pub async fn request_raw<Resp: Message>(
    client: &async_nats::Client,
    op: ApiOp,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<Resp, RequestError> {
    request_at(client, op, op.subject(), payload, timeout).await
}

async fn request_at<Resp: Message>(
    client: &async_nats::Client,
    op: ApiOp,
    subject: String,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<Resp, RequestError> {
    use async_nats::RequestErrorKind as K;
    let req = async_nats::Request::new().payload(payload.into()).timeout(Some(timeout));
    let msg = client.send_request(subject.clone(), req).await.map_err(|e| match e.kind() {
        K::NoResponders => RequestError::NoResponders { subject: subject.clone(), service: op.service() },
        K::TimedOut => RequestError::Timeout(subject.clone()),
        _ => RequestError::Transport { subject: subject.clone(), message: e.to_string() },
    })?;
    let bad = |message: String| RequestError::BadReply { subject: subject.clone(), message };
    let is_error = msg.headers.as_ref().and_then(|h| h.get(NATS_SERVICE_ERROR)).is_some();
    if is_error {
        let err = decode::<ApiError>(&msg.payload).map_err(|e| bad(e.to_string()))?;
        return Err(RequestError::Api(err));
    }
    decode::<Resp>(&msg.payload).map_err(|e| bad(e.to_string()))
}

/// Failed requests per endpoint name (`app-apply`, ...), as a service shows them in `$SRV.STATS`.
pub type Failures = std::sync::Arc<dashmap::DashMap<String, u64>>;

/// Name of an operation's endpoint on the service API, e.g. `app-apply`.
pub fn endpoint_name(op: ApiOp) -> String {
    let (noun, verb) = op.parts();
    format!("{noun}-{verb}")
}

/// The body of a request, refused when it is larger than any message may be.
pub fn body(req: &Request) -> Result<&[u8], ApiError> {
    let body = &req.message.payload;
    if body.len() > edge_types::schema::MAX_MESSAGE_BYTES {
        return Err(invalid(DecodeError::TooLarge(body.len())));
    }
    Ok(body)
}

/// Sends the reply of a request to `op`, counting a failure under its endpoint name (the error
/// is logged: it names fields, never values).
pub async fn reply_counted<T: Serialize>(failures: &Failures, op: ApiOp, req: &Request, result: Result<T, ApiError>) {
    if let Err(e) = &result {
        let endpoint = match edge_types::subject::tenant_of_request(&req.message.subject) {
            Some(_) => format!("tenant-{}", endpoint_name(op)),
            None => endpoint_name(op),
        };
        *failures.entry(endpoint).or_insert(0) += 1;
        tracing::info!(op = %op.subject(), error = %e, "request refused");
    }
    respond(req, result).await
}

/// A request to one of a service's endpoints: `None` is its `edge.v1.<service>.health`.
pub type Incoming = (Option<ApiOp>, Request);

/// Registers, on `service`, `edge.v1.<name>.health` and an endpoint for every operation that
/// [`ApiOp::service`] assigns to `name` (endpoint names like `image-push`; a
/// [`ApiOp::tenant_scoped`] one also on tenants' subjects, `tenant-app-apply`), and returns
/// their requests as one stream.
pub async fn endpoints(
    service: &async_nats::service::Service,
    name: &str,
) -> Result<futures::stream::SelectAll<futures::stream::BoxStream<'static, Incoming>>, async_nats::Error> {
    use futures::StreamExt;
    let health = service.group(format!("{}.{name}", edge_types::subject::PREFIX)).endpoint("health").await?;
    let mut all = vec![health.map(|req| (None, req)).boxed()];
    for op in ApiOp::ALL.into_iter().filter(|op| op.service() == name) {
        let ep = service.group(op.group()).endpoint_builder().name(endpoint_name(op)).add(op.endpoint()).await?;
        all.push(ep.map(move |req| (Some(op), req)).boxed());
        if op.tenant_scoped() {
            // Tenants' requests, `edge.v1.api.tenant.<tenant>.<noun>.<verb>`: the handler
            // learns the tenant from the subject (`edge_types::block::Caller::of_subject`).
            let (group, endpoint) = edge_types::subject::tenant_api_endpoint(op);
            let named = format!("tenant-{}", endpoint_name(op));
            let ep = service.group(group).endpoint_builder().name(named).add(endpoint).await?;
            all.push(ep.map(move |req| (Some(op), req)).boxed());
        }
    }
    Ok(futures::stream::select_all(all))
}

/// Hands every request of `requests` to `handle`, each in its own task, until `shutdown` is
/// cancelled or the stream ends; then stops intake and waits for the requests in flight, so
/// each gets its reply.
pub async fn serve_until<S, H, F>(mut requests: S, shutdown: &tokio_util::sync::CancellationToken, handle: H)
where
    S: futures::Stream<Item = Incoming> + Unpin,
    H: Fn(Option<ApiOp>, Request) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    use futures::StreamExt;
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = requests.next() => {
                let Some((op, req)) = r else { break };
                inflight.spawn(handle(op, req));
            }
        }
    }
    drop(requests);
    while inflight.join_next().await.is_some() {}
}

/// Answers a health request of service `name`.
pub async fn answer_health(req: Request, name: &str, version: &str) {
    if let Err(e) = req.respond(Ok(crate::health::health_body(name, version).into())).await {
        tracing::warn!(error = %e, "health reply failed");
    }
}
