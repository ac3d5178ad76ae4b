//! `list`, `history`, `events`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use api::model::{ClusterView, EventsView, HistoryView};
use hyper::Method;

use super::target::{success, Target};
use super::{render, CtlError, Output};

fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("plain data")
    );
}

pub async fn run(target: &Target, output: Output, watch: Option<u64>) -> Result<(), CtlError> {
    let terminal = std::io::stdout().is_terminal();
    loop {
        let view: ClusterView = target.get("/cluster").await?;
        match output {
            Output::Json => print_json(&view),
            Output::Table => {
                match watch {
                    // Clear the screen and go home, like `watch`.
                    Some(_) if terminal => print!("\x1b[2J\x1b[H"),
                    // Into a pipe or a file: one snapshot after the other,
                    // each under the time it was taken.
                    Some(_) => println!("--- {}", api::time::format_rfc3339(api::time::now_ms())),
                    None => {}
                }
                print!("{}", render::cluster(&view));
            }
        }
        let _ = std::io::stdout().flush();
        let Some(seconds) = watch else {
            return Ok(());
        };
        tokio::time::sleep(Duration::from_secs(seconds.max(1))).await;
    }
}

pub async fn history(target: &Target, output: Output) -> Result<(), CtlError> {
    let history: HistoryView = target.get("/history").await?;
    match output {
        Output::Json => print_json(&history),
        Output::Table => print!("{}", render::history(&history.entries)),
    }
    Ok(())
}

pub async fn events(target: &Target, output: Output, follow: bool) -> Result<(), CtlError> {
    let mut after = 0;
    let mut first = true;
    loop {
        // The first page is what there is; then long polls for what comes.
        let wait = if first { "" } else { "&wait=30s" };
        first = false;
        let reply = target
            .send(
                Method::GET,
                &format!("/events?after={after}{wait}"),
                None,
                None,
                Duration::from_secs(45),
            )
            .await?;
        success(&reply)?;
        let page: EventsView = reply.json().map_err(|e| CtlError::Refused(e.to_string()))?;
        for event in &page.events {
            match output {
                Output::Json => println!("{}", serde_json::to_string(event).expect("plain data")),
                Output::Table => println!("{}", render::event(event)),
            }
        }
        after = page.last_seq.max(after);
        if !follow {
            return Ok(());
        }
    }
}
