//! `restart M`, `reinit M` (following the clone with a progress bar),
//! `remove M`, `readmit M`.

use std::time::Duration;

use api::local::LocalState;
use api::model::ClusterView;
use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::target::{success, Target};
use super::{CtlError, Output};

/// Longer than the API's wait for the agent's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(130);

async fn ask(target: &Target, output: Output, path: &str, member: &str) -> Result<(), CtlError> {
    let body = json!({ "member": member });
    ask_with(target, output, path, member, &body).await
}

async fn ask_with(
    target: &Target,
    output: Output,
    path: &str,
    member: &str,
    body: &Value,
) -> Result<(), CtlError> {
    let reply = target
        .send(Method::POST, path, Some(body), None, CALL_TIMEOUT)
        .await?;
    success(&reply)?;
    let answer: Value = reply.json().map_err(|e| CtlError::Refused(e.to_string()))?;
    match output {
        Output::Json => println!("{answer}"),
        Output::Table => println!("{member}: {}", answer["result"].as_str().unwrap_or("done")),
    }
    Ok(())
}

pub async fn restart(target: &Target, output: Output, member: &str) -> Result<(), CtlError> {
    ask(target, output, "/restart", member).await
}

/// `remove M [--force]`: then waits (a while) for the primary to have
/// dropped M's slot, and says so.
pub async fn remove(
    target: &Target,
    output: Output,
    member: &str,
    force: bool,
) -> Result<(), CtlError> {
    let body = json!({ "member": member, "force": force });
    ask_with(target, output, "/remove", member, &body).await?;
    if output == Output::Json {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let view: ClusterView = target.get("/cluster").await?;
        let primary = view.members.iter().find(|m| m.leader);
        let holds = primary.is_some_and(|p| p.slots.iter().any(|s| s.member == member));
        match primary {
            Some(p) if !holds => {
                println!("{member}: no slot left on the primary {}", p.name);
                return Ok(());
            }
            None if tokio::time::Instant::now() >= deadline => {
                eprintln!(
                    "{member} is removed; there is no primary now, and the one elected next keeps no \
                     slot for it (`pgwarden ctl list` shows the slots it keeps)"
                );
                return Ok(());
            }
            Some(_) if tokio::time::Instant::now() >= deadline => {
                eprintln!(
                    "{member} is removed, but the primary has not reported its slot dropped yet; \
                     `pgwarden ctl list` shows the slots it keeps"
                );
                return Ok(());
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

pub async fn readmit(target: &Target, output: Output, member: &str) -> Result<(), CtlError> {
    ask(target, output, "/readmit", member).await
}

pub async fn reinit(
    target: &Target,
    output: Output,
    member: &str,
    follow: bool,
) -> Result<(), CtlError> {
    ask(target, output, "/reinit", member).await?;
    if !follow || output == Output::Json {
        return Ok(());
    }
    let view: ClusterView = target.get("/cluster").await?;
    let Some(api_url) = view
        .members
        .iter()
        .find(|m| m.name == member)
        .map(|m| m.api_url.clone())
    else {
        return Ok(());
    };
    follow_clone(target, member, &api_url).await
}

/// Polls the member's `/health` until it streams again, drawing its
/// activity. The agent answers a reinit before it starts, so a member
/// that still streams from before is not done: done is streaming after the
/// clone was seen (or PostgreSQL was seen down), or streaming for a long
/// while with neither seen (a clone too quick to catch).
async fn follow_clone(target: &Target, member: &str, api_url: &str) -> Result<(), CtlError> {
    const POLL: Duration = Duration::from_millis(500);
    const UNSEEN: u32 = 60;
    let bar = ProgressBar::new_spinner();
    bar.set_message(format!("{member}: waiting for the clone to start"));
    let mut seen_work = false;
    let mut polls = 0u32;
    loop {
        tokio::time::sleep(POLL).await;
        polls += 1;
        // Unreachable or 503 while PostgreSQL is down: keep waiting.
        let Ok(reply) = target
            .send_to(
                api_url,
                Method::GET,
                "/health",
                None,
                None,
                Duration::from_secs(5),
            )
            .await
        else {
            bar.tick();
            continue;
        };
        let Ok(local) = reply.json::<LocalState>() else {
            continue;
        };
        match &local.activity {
            Some(activity) => {
                seen_work = true;
                if let Some(total) = activity.total_bytes {
                    if bar.length() != Some(total) {
                        bar.set_length(total);
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})",
                            )
                            .expect("valid template")
                            .progress_chars("=> "),
                        );
                    }
                }
                bar.set_position(activity.done_bytes);
                bar.set_message(format!("{member}: {}", activity.what));
            }
            None if local.streaming && (seen_work || polls > UNSEEN) => {
                bar.finish_with_message(format!("{member}: streaming from the leader"));
                eprintln!("{member} streams from the leader again");
                return Ok(());
            }
            None => {
                seen_work |= !local.pg_running;
                // The agent's last decision in words: why nothing moves,
                // when it does not.
                if !local.note.is_empty() {
                    bar.set_message(format!("{member}: {}", local.note));
                }
                bar.tick();
            }
        }
    }
}
