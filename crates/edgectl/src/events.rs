//! `edgectl events APP --topic T`: what an application's containers published to one of its
//! topics, read from the hub's copy of every site's (`edge.v1.api.app.events`), filtered by site
//! and time. With `-f` it follows: new messages print as they arrive, none twice, none skipped.
//! `edgectl send APP --topic T DATA`: one message to a `to_sites` topic (`edge.v1.api.app.send`).

use std::time::Duration;

use anyhow::{Context, Result};
use edge_bus::api::request;
use edge_types::subject::ApiOp;
use edge_types::topic::{EventsReply, EventsRequest, SendReply, SendRequest, TopicEvent};
use edge_types::Name;

use crate::cli::{EventsArgs, Format, Global, SendArgs, TopicArgs};
use crate::{connect, REQUEST_TIMEOUT};

/// How often a follow asks for what is new.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// App, topic and sites, checked.
fn names(t: &TopicArgs) -> Result<(Name, Name, Vec<Name>)> {
    let name = |what: &str, s: &str| Name::new(s).with_context(|| format!("{what} {s:?}"));
    let sites = t.site.iter().map(|s| name("site", s)).collect::<Result<_>>()?;
    Ok((name("app", &t.app)?, name("topic", &t.topic)?, sites))
}

pub async fn run(args: EventsArgs, global: &Global) -> Result<()> {
    let client = connect(global).await?;
    let (name, topic, sites) = names(&args.topic)?;
    let since_ms = match &args.since {
        Some(d) => Some(edge_bus::time::now_ms().saturating_sub(parse_duration(d)?.as_millis() as u64)),
        None => None,
    };
    let mut req = EventsRequest { name, topic, sites, since_ms, after_seq: None, max: 1000 };
    let mut printed = 0usize;
    loop {
        let reply: EventsReply = request(&client, ApiOp::AppEvents, &req, REQUEST_TIMEOUT).await?;
        for e in &reply.events {
            if args.limit.is_some_and(|l| printed >= l) {
                return Ok(());
            }
            print_event(e, global.output)?;
            printed += 1;
        }
        req.after_seq = Some(reply.last_seq);
        req.since_ms = None;
        if reply.more {
            continue;
        }
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

pub async fn send(args: SendArgs, global: &Global) -> Result<()> {
    let (name, topic, sites) = names(&args.topic)?;
    let data = match args.data.as_deref() {
        Some("-") | None => {
            std::io::read_to_string(std::io::stdin()).context("reading the message from standard input")?
        }
        Some(d) => d.to_string(),
    };
    let req = SendRequest { name, topic, sites, data, id: args.id };
    let client = connect(global).await?;
    let reply: SendReply = request(&client, ApiOp::AppSend, &req, REQUEST_TIMEOUT).await?;
    match global.output {
        Format::Json => println!("{}", serde_json::to_string(&reply)?),
        Format::Table => println!("stored for {} site(s): {}", reply.sites.len(), crate::output::names(&reply.sites)),
    }
    Ok(())
}

fn print_event(e: &TopicEvent, format: Format) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string(e)?),
        Format::Table => {
            let data = e.data.clone().unwrap_or_else(|| format!("hex:{}", e.data_hex.as_deref().unwrap_or_default()));
            println!("{}  {:<20} {:>8}  {}", crate::output::time_of(e.stored_ms), e.site, e.seq, data.trim_end());
        }
    }
    Ok(())
}

/// `90`, `90s`, `15m`, `2h` or `7d`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().with_context(|| format!("duration {s:?}: expected e.g. 90s, 15m, 2h or 7d"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("duration {s:?}: the unit is s, m, h or d"),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("2w").is_err());
        assert!(parse_duration("m").is_err());
    }
}
