//! A trace collector for tests: an OTLP/HTTP receiver on loopback that accepts JSON-encoded
//! trace exports (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`, POST `/v1/traces`) and keeps the
//! spans, as a collector such as Jaeger or Tempo would.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One received span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a trace's root.
    pub parent_span_id: String,
    pub name: String,
    /// The `service.name` of the resource that exported it.
    pub service: String,
}

/// The receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: std::net::SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    task: JoinHandle<()>,
}

impl OtlpReceiver {
    pub async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let keep = spans.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let keep = keep.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(conn, &keep).await {
                        tracing::warn!(error = %e, "otlp receiver: bad request");
                    }
                });
            }
        });
        Ok(Self { addr, spans, task })
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("spans lock").clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the requests of one connection (HTTP/1.1 with keep-alive, bodies by Content-Length).
async fn serve(conn: TcpStream, spans: &Mutex<Vec<Span>>) -> Result<()> {
    let (read, mut write) = conn.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        if read.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            read.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().context("content-length")?;
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("transfer-encoding {} not supported", v.trim());
                }
            }
        }
        let mut body = vec![0; length];
        read.read_exact(&mut body).await?;
        let status = if request_line.starts_with("POST /v1/traces ") {
            match parse(&body) {
                Ok(got) => {
                    spans.lock().expect("spans lock").extend(got);
                    "200 OK"
                }
                Err(_) => "400 Bad Request",
            }
        } else {
            "404 Not Found"
        };
        let reply = format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}");
        write.write_all(reply.as_bytes()).await?;
    }
}

/// The spans of an `ExportTraceServiceRequest` in OTLP's JSON encoding.
fn parse(body: &[u8]) -> Result<Vec<Span>> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let mut out = Vec::new();
    for rs in v["resourceSpans"].as_array().context("resourceSpans")? {
        let service = rs["resource"]["attributes"]
            .as_array()
            .and_then(|a| a.iter().find(|kv| kv["key"] == "service.name"))
            .map(|kv| text(&kv["value"], "stringValue"))
            .unwrap_or_default();
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for s in ss["spans"].as_array().into_iter().flatten() {
                out.push(Span {
                    trace_id: text(s, "traceId"),
                    span_id: text(s, "spanId"),
                    parent_span_id: text(s, "parentSpanId"),
                    name: text(s, "name"),
                    service: service.clone(),
                });
            }
        }
    }
    Ok(out)
}
