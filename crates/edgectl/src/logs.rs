//! `edgectl logs APP`: fans one request out to every site running the app (or `--site`), over
//! `edge.v1.logs.<site>`; every host of those sites answers with its containers' lines. With
//! `-f` the request is renewed every 10 s and new lines print until interrupted.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;
use edge_bus::api::request;
use edge_types::api::{AppRef, AppStatusReply, Empty, SiteListReply};
use edge_types::logs::{LogChunk, LogRequest};
use edge_types::schema::decode;
use edge_types::subject::{self, ApiOp};
use edge_types::Name;
use futures::StreamExt;

use crate::cli::{Format, Global, LogsArgs};
use crate::{connect, REQUEST_TIMEOUT};

/// How long to wait for hosts that have not answered.
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// How often a follow is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(10);

pub async fn run(args: LogsArgs, global: &Global) -> Result<()> {
    let client = connect(global).await?;
    let app = Name::new(&args.app).map_err(|e| anyhow::anyhow!("app {:?}: {e}", args.app))?;
    let status: AppStatusReply =
        request(&client, ApiOp::AppStatus, &AppRef { name: app.clone() }, REQUEST_TIMEOUT).await?;
    let mut sites: Vec<Name> = status.sites.iter().map(|s| s.site.clone()).collect();
    if let Some(only) = &args.site {
        sites.retain(|s| s.as_str() == only);
        anyhow::ensure!(!sites.is_empty(), "{app} does not run at site {only}");
    }
    let listed: SiteListReply = request(&client, ApiOp::SiteList, &Empty {}, REQUEST_TIMEOUT).await?;
    let hosts: HashMap<Name, usize> = listed.sites.iter().map(|s| (s.site.clone(), s.hosts.len().max(1))).collect();
    let expected: usize = sites.iter().map(|s| hosts.get(s).copied().unwrap_or(1)).sum();

    let req = LogRequest {
        app,
        service: args.service.as_deref().map(Name::new).transpose().map_err(|e| anyhow::anyhow!("service: {e}"))?,
        tail: args.tail,
        since_secs: args.since,
        grep: args.grep.clone(),
        follow: args.follow,
        session: nuid::next().to_string(),
    };
    let body: bytes::Bytes = serde_json::to_vec(&req)?.into();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    let ask = |client: async_nats::Client, inbox: String, body: bytes::Bytes, sites: Vec<Name>| async move {
        for s in &sites {
            client.publish_with_reply(subject::logs(s), inbox.clone(), body.clone()).await?;
        }
        client.flush().await?;
        Ok::<_, anyhow::Error>(())
    };
    ask(client.clone(), inbox.clone(), body.clone(), sites.clone()).await?;

    let mut done = 0;
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + RENEW_EVERY, RENEW_EVERY);
    let deadline = tokio::time::sleep(ANSWER_WAIT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            m = replies.next() => {
                let Some(m) = m else { break };
                let Ok(chunk) = decode::<LogChunk>(&m.payload) else { continue };
                print(global.output, &chunk);
                done += chunk.done as usize;
                if done >= expected && !args.follow {
                    break;
                }
            }
            _ = &mut deadline, if !args.follow => {
                if done < expected {
                    eprintln!("{} of {expected} hosts did not answer within {} s", expected - done, ANSWER_WAIT.as_secs());
                }
                break;
            }
            _ = renew.tick(), if args.follow => ask(client.clone(), inbox.clone(), body.clone(), sites.clone()).await?,
            _ = tokio::signal::ctrl_c(), if args.follow => break,
        }
    }
    Ok(())
}

fn print(format: Format, c: &LogChunk) {
    if format == Format::Json {
        println!("{}", serde_json::to_string(c).expect("chunks serialize"));
        return;
    }
    if let Some(e) = &c.error {
        eprintln!("{}/{}: {e}", c.site, c.host);
    }
    let who = match (&c.service, c.replica) {
        (Some(s), Some(r)) => format!("{}/{}/{s}-{r}", c.site, c.host),
        _ => format!("{}/{}", c.site, c.host),
    };
    for l in &c.lines {
        println!("{who} | {l}");
    }
}
