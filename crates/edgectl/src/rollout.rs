//! `edgectl app rollout ...`, `app history` and `app rollback`.

use std::time::Duration;

use anyhow::Result;
use edge_bus::api::request;
use edge_types::api::AppRecord;
use edge_types::rollout::*;
use edge_types::subject::ApiOp;

use crate::cli::{Format, Global, RolloutCommand};
use crate::output::{print, table};
use crate::REQUEST_TIMEOUT;

pub async fn run(client: &async_nats::Client, cmd: RolloutCommand, global: &Global) -> Result<()> {
    match cmd {
        RolloutCommand::Status { name, watch, once } => loop {
            use std::io::IsTerminal;
            let watch = !once && (watch || (std::io::stdout().is_terminal() && global.output == Format::Table));
            let r: RolloutStatusReply =
                request(client, ApiOp::AppRollout, &serde_json::json!({ "name": name }), REQUEST_TIMEOUT).await?;
            let done = r.rollout.as_ref().is_none_or(|ro| ro.phase != RolloutPhase::Progressing);
            match global.output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                Format::Table => {
                    if watch {
                        print!("\x1b[2J\x1b[H"); // clear the terminal and redraw
                    }
                    print!("{}", render(&r));
                }
            }
            if !watch || done {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        },
        RolloutCommand::Pause { name, all } => control(client, ApiOp::AppPause, name, all, global).await,
        RolloutCommand::Resume { name, all } => control(client, ApiOp::AppResume, name, all, global).await,
    }
}

async fn control(
    client: &async_nats::Client,
    op: ApiOp,
    name: Option<String>,
    all: bool,
    global: &Global,
) -> Result<()> {
    let body = serde_json::json!({ "name": name, "all": all });
    let r: RolloutControlReply = request(client, op, &body, REQUEST_TIMEOUT).await?;
    let verb = if op == ApiOp::AppPause { "paused" } else { "resumed" };
    let rows = r.apps.iter().map(|a| vec![a.to_string(), verb.to_string()]).collect();
    print(global.output, &r, &["APP", "ROLLOUT"], rows);
    Ok(())
}

/// A progress bar of `width` cells for `done` of `total`.
pub fn bar(done: u32, total: u32, width: usize) -> String {
    let filled = if total == 0 { width } else { (done as usize * width) / total as usize };
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// The rollout as people read it: a header line, then one line per wave with its bar.
pub fn render(r: &RolloutStatusReply) -> String {
    let Some(ro) = &r.rollout else {
        return format!("{}: no rollout (every version so far went out at once)\n", r.name);
    };
    let phase = format!("{:?}", ro.phase).to_lowercase();
    let mut out = format!(
        "{} {} -> {} (generation {}): {phase}{}\n",
        r.name,
        ro.from_version,
        ro.version,
        ro.generation,
        if ro.message.is_empty() { String::new() } else { format!(" - {}", ro.message) }
    );
    let rows: Vec<Vec<String>> = r
        .waves
        .iter()
        .map(|w| {
            vec![
                w.name.clone(),
                w.state.clone(),
                format!("{} {}/{}", bar(w.running, w.sites, 20), w.running, w.sites),
                w.failed.to_string(),
                w.progressing.to_string(),
                w.waiting.to_string(),
            ]
        })
        .collect();
    out += &table(&["WAVE", "STATE", "RUNNING", "FAILED", "PROGRESSING", "WAITING"], &rows);
    out
}

pub async fn history(client: &async_nats::Client, name: String, global: &Global) -> Result<()> {
    let r: HistoryReply =
        request(client, ApiOp::AppHistory, &serde_json::json!({ "name": name }), REQUEST_TIMEOUT).await?;
    let rows = r
        .revisions
        .iter()
        .map(|v| vec![v.generation.to_string(), v.version.clone(), v.applied_at_ms.to_string(), v.outcome.clone()])
        .collect();
    print(global.output, &r, &["GENERATION", "VERSION", "APPLIED_AT_MS", "OUTCOME"], rows);
    Ok(())
}

pub async fn rollback(client: &async_nats::Client, name: String, to: Option<String>, global: &Global) -> Result<()> {
    let body = RollbackRequest { name: edge_types::Name::new(name)?, to_version: to };
    let r: AppRecord = request(client, ApiOp::AppRollback, &body, REQUEST_TIMEOUT).await?;
    let rows = vec![vec![r.spec.name.to_string(), r.spec.version.clone(), r.generation.to_string()]];
    print(global.output, &r, &["APP", "NOW AT VERSION", "GENERATION"], rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_render_with_a_bar_each() {
        assert_eq!(bar(0, 4, 8), "[--------]");
        assert_eq!(bar(2, 4, 8), "[####----]");
        assert_eq!(bar(4, 4, 8), "[########]");
        let name = edge_types::Name::new("shop").unwrap();
        let wave = |n: &str, state: &str, running| WaveStatus {
            name: n.into(),
            state: state.into(),
            sites: 2,
            running,
            failed: 0,
            progressing: 2 - running,
            waiting: 0,
        };
        let r = RolloutStatusReply {
            name: name.clone(),
            rollout: Some(RolloutState {
                generation: 2,
                version: "2.0.0".into(),
                from_generation: 1,
                from_version: "1.0.0".into(),
                waves: vec![],
                current: 1,
                phase: RolloutPhase::Progressing,
                held: Default::default(),
                started_at_ms: 0,
                wave_started_at_ms: 0,
                healthy_since_ms: None,
                message: "wave 2 started".into(),
            }),
            waves: vec![wave("canary", "done", 2), wave("wave 2", "in progress", 1)],
        };
        let text = render(&r);
        assert!(text.starts_with("shop 1.0.0 -> 2.0.0 (generation 2): progressing - wave 2 started\n"), "{text}");
        assert!(text.contains("canary  done         [####################] 2/2"), "{text}");
        assert!(text.contains("[##########----------] 1/2"), "{text}");
        let none = RolloutStatusReply { name, rollout: None, waves: vec![] };
        assert!(render(&none).contains("no rollout"));
    }
}
