//! `backup run` (ask for a base backup and follow it to its end with a
//! progress bar) and `backup status`.

use std::time::{Duration, Instant};

use api::local::{Activity, LocalState};
use api::model::{BackupView, RunningBackup};
use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use store::cluster::{BackupKind, LastBackup};

use super::target::{success, Target};
use super::{CtlError, Output};

const POLL: Duration = Duration::from_millis(500);
/// A request no leader took by then is reported, not waited on for ever.
const UNTAKEN: Duration = Duration::from_secs(60);
/// How long an assignment that ended may take to show its record.
const RECORD_GRACE: Duration = Duration::from_secs(15);
/// How long reads may keep failing (a failover, a store election) before
/// following gives up.
const READS_FAILING: Duration = Duration::from_secs(60);

/// `GET /backup`, asked again while the answer is a 503 (the store did not
/// answer that member), no member answers, or one is too slow, for up to
/// [`READS_FAILING`].
async fn read(target: &Target) -> Result<BackupView, CtlError> {
    let began = Instant::now();
    loop {
        match target.get("/backup").await {
            Ok(view) => return Ok(view),
            Err(e) if began.elapsed() > READS_FAILING => return Err(e),
            Err(CtlError::Unreachable(_)) | Err(CtlError::TimedOut(_)) => {}
            Err(CtlError::Refused(m)) if m.contains("503") => {}
            Err(e) => return Err(e),
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn run(
    target: &Target,
    output: Output,
    full: bool,
    force: bool,
    wait: bool,
) -> Result<(), CtlError> {
    let before = read(target).await?;
    let body = json!({ "full": full, "force": force });
    let reply = target
        .send(
            Method::POST,
            "/backup",
            Some(&body),
            None,
            Duration::from_secs(10),
        )
        .await?;
    success(&reply)?;
    let asked: BackupView = reply.json().map_err(|e| CtlError::Refused(e.to_string()))?;
    if !wait {
        match output {
            Output::Json => print_json(&asked),
            Output::Table => {
                println!("Backup requested; `pgwarden ctl backup status` shows how it goes")
            }
        }
        return Ok(());
    }
    let end = follow(target, output, before.last.as_ref()).await?;
    if output == Output::Json {
        print_json(&end.view);
    }
    match end.outcome {
        Outcome::Done(last) => {
            if output == Output::Table {
                println!("{}", done_line(&last));
            }
            Ok(())
        }
        Outcome::Skipped(last) => {
            if output == Output::Table {
                println!(
                    "Skipped: the WAL has not moved since backup {} ended; `--force` takes one anyway",
                    last.id.as_deref().unwrap_or("(unnamed)")
                );
            }
            Ok(())
        }
        Outcome::Failed(reason) => Err(CtlError::Refused(format!("the backup failed: {reason}"))),
    }
}

enum Outcome {
    Done(LastBackup),
    Skipped(LastBackup),
    Failed(String),
}

struct End {
    outcome: Outcome,
    view: BackupView,
}

/// Polls `/backup` until the request was carried out: a new last backup, a
/// skip, or a failure. While a member takes it, its `/health` gives the
/// progress.
async fn follow(
    target: &Target,
    output: Output,
    before: Option<&LastBackup>,
) -> Result<End, CtlError> {
    let bar = match output {
        Output::Table => ProgressBar::new_spinner(),
        Output::Json => ProgressBar::hidden(),
    };
    bar.set_message("waiting for the leader to assign the backup");
    let asked = Instant::now();
    let mut seen_running = false;
    let mut idle_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(POLL).await;
        let view = read(target).await?;
        if let Some(running) = &view.running {
            seen_running = true;
            idle_since = None;
            draw(target, &bar, running).await;
            continue;
        }
        let last = view.last.clone().unwrap_or_default();
        let before = before.cloned().unwrap_or_default();
        let outcome = if last.done_ms != before.done_ms {
            Some(Outcome::Done(last.clone()))
        } else if last.failure != before.failure {
            Some(Outcome::Failed(
                last.failure
                    .as_ref()
                    .map(|f| format!("on {}: {}", f.member, f.reason))
                    .unwrap_or_default(),
            ))
        } else if last.checked_ms != before.checked_ms && !seen_running {
            Some(Outcome::Skipped(last.clone()))
        } else {
            None
        };
        if let Some(outcome) = outcome {
            bar.finish_and_clear();
            return Ok(End { outcome, view });
        }
        if view.request.is_some() {
            if asked.elapsed() > UNTAKEN {
                bar.finish_and_clear();
                return Err(CtlError::TimedOut(format!(
                    "no leader took the backup request within {} s; it stays pending. \
                     `pgwarden ctl list` shows the leader and its last decision",
                    UNTAKEN.as_secs()
                )));
            }
            continue;
        }
        // Neither pending nor running, and no record yet: the taker may
        // still be writing it; a leader that ended the assignment of a
        // member gone for good writes none.
        let since = *idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() > RECORD_GRACE {
            bar.finish_and_clear();
            return Ok(End {
                outcome: Outcome::Failed(
                    "the backup ended without a record: its member went away (the leader ended \
                     the assignment); see `pgwarden ctl events`"
                        .into(),
                ),
                view,
            });
        }
    }
}

/// What the running backup's member says it is doing (`/health`), if
/// it answers.
async fn activity(target: &Target, running: &RunningBackup) -> Option<Activity> {
    let url = running.api_url.as_ref()?;
    target
        .send_to(
            url,
            Method::GET,
            "/health",
            None,
            None,
            Duration::from_secs(5),
        )
        .await
        .ok()?
        .json::<LocalState>()
        .ok()?
        .activity
}

/// The running backup's progress, from its member's `/health`.
async fn draw(target: &Target, bar: &ProgressBar, running: &RunningBackup) {
    let member = &running.assignment.member;
    let activity = activity(target, running)
        .await
        // After the backup, the dumps `dump_databases` names.
        .filter(|a| a.what.starts_with("backup") || a.what.starts_with("dump"));
    let Some(activity) = activity else {
        bar.set_message(format!(
            "{} backup on {member}: starting",
            kind_name(running.assignment.kind)
        ));
        bar.tick();
        return;
    };
    if let Some(total) = activity.total_bytes {
        if bar.length() != Some(total) {
            bar.set_length(total);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
        }
    }
    bar.set_position(activity.done_bytes);
    bar.set_message(format!("{member}: {}", activity.what));
}

pub async fn status(target: &Target, output: Output) -> Result<(), CtlError> {
    let view: BackupView = target.get("/backup").await?;
    if output == Output::Json {
        print_json(&view);
        return Ok(());
    }
    if let Some(running) = &view.running {
        let mut line = format!(
            "Running: {} backup on {}, assigned {}",
            kind_name(running.assignment.kind),
            running.assignment.member,
            api::time::format_rfc3339(running.assignment.assigned_ms)
        );
        match activity(target, running).await {
            // The dumps after the backup count no bytes.
            Some(a) if a.total_bytes.is_none() && a.done_bytes == 0 => {
                line.push_str(&format!(": {}", a.what))
            }
            Some(a) => line.push_str(&format!(
                ": {}, {} of {} read",
                a.what,
                size(a.done_bytes),
                a.total_bytes.map_or("?".to_string(), size)
            )),
            None => {}
        }
        println!("{line}");
    }
    if let Some(request) = &view.request {
        println!(
            "Pending request: {}{}, asked {}",
            request.kind.map_or("scheduled kind", kind_name),
            if request.force { ", forced" } else { "" },
            api::time::format_rfc3339(request.requested_ms)
        );
    }
    match &view.last {
        Some(last) if last.id.is_some() => println!("Last: {}", done_line(last)),
        _ => println!("Last: no backup completed yet"),
    }
    if let Some(last) = &view.last {
        if let Some(failure) = &last.failure {
            println!(
                "Last failure: {} backup on {} at {}: {}",
                kind_name(failure.kind),
                failure.member,
                api::time::format_rfc3339(failure.at_ms),
                failure.reason
            );
        }
        if last.checked_ms > last.done_ms
            && last
                .failure
                .as_ref()
                .is_none_or(|f| f.at_ms != last.checked_ms)
        {
            println!(
                "Last skipped: {} (the WAL had not moved)",
                api::time::format_rfc3339(last.checked_ms)
            );
        }
    }
    Ok(())
}

fn done_line(last: &LastBackup) -> String {
    format!(
        "backup {} ({}) done on {} at {}: {} of data, {} written, in {:.1} s",
        last.id.as_deref().unwrap_or("(unnamed)"),
        last.kind.map_or("?", kind_name),
        last.member.as_deref().unwrap_or("?"),
        api::time::format_rfc3339(last.done_ms),
        size(last.bytes),
        size(last.stored_bytes),
        last.done_ms.saturating_sub(last.started_ms) as f64 / 1000.0
    )
}

fn kind_name(kind: BackupKind) -> &'static str {
    match kind {
        BackupKind::Full => "full",
        BackupKind::Incremental => "incremental",
    }
}

fn size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

fn print_json(view: &BackupView) {
    println!(
        "{}",
        serde_json::to_string_pretty(view).expect("plain data")
    );
}
