//! `switchover`, `switchover --cancel`, `failover`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use api::model::{ClusterView, SwitchoverDone};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::target::{success, Target};
use super::{render, CtlError, Output};

/// Longer than the API's own wait, so its answer (done or not) arrives.
const CALL_TIMEOUT: Duration = Duration::from_secs(45);

/// Asks "are you sure" on a terminal; without one, refuses unless forced.
fn confirm(question: &str, force: bool) -> Result<(), CtlError> {
    if force {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CtlError::Usage(format!(
            "{question} needs confirmation, and standard input is not a terminal; add --force"
        )));
    }
    eprint!("{question} Are you sure? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CtlError::Usage("aborted; nothing was changed".to_string()))
    }
}

/// `at` as given on the command line: unix seconds or RFC 3339.
fn at_value(at: &str) -> Result<Value, CtlError> {
    if let Ok(seconds) = at.parse::<u64>() {
        return Ok(json!(seconds));
    }
    api::time::parse_rfc3339(at).map_err(|e| CtlError::Usage(e.to_string()))?;
    Ok(json!(at))
}

async fn carry_out(
    target: &Target,
    output: Output,
    path: &str,
    body: Value,
) -> Result<(), CtlError> {
    let reply = target
        .send(Method::POST, path, Some(&body), None, CALL_TIMEOUT)
        .await?;
    if reply.status == StatusCode::SERVICE_UNAVAILABLE {
        // The API's wait ended without the change: say how it looks.
        let answer: Value = reply.json().unwrap_or(Value::Null);
        let mut message = reply.error_message();
        if let Some(view) = answer
            .get("cluster")
            .and_then(|c| serde_json::from_value::<ClusterView>(c.clone()).ok())
        {
            message = format!("{message}\n{}", render::cluster(&view));
        }
        return Err(CtlError::TimedOut(message));
    }
    success(&reply)?;
    let answer: Value = reply.json().map_err(|e| CtlError::Refused(e.to_string()))?;
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).expect("plain data")
        );
        return Ok(());
    }
    if reply.status == StatusCode::ACCEPTED {
        let at = answer["scheduled"]["at_ms"].as_u64().unwrap_or(0);
        println!(
            "Switchover scheduled for {}; `pgwarden ctl list` shows it pending, `pgwarden ctl switchover --cancel` cancels it",
            api::time::format_rfc3339(at)
        );
    } else if let Ok(done) = serde_json::from_value::<SwitchoverDone>(answer) {
        println!(
            "{} is the new leader{} ({:.1} s)",
            done.to,
            done.from
                .map(|f| format!(", {f} stepped down"))
                .unwrap_or_default(),
            done.took_ms as f64 / 1000.0
        );
    }
    Ok(())
}

pub async fn switchover(
    target: &Target,
    output: Output,
    from: Option<String>,
    to: Option<String>,
    at: Option<String>,
    force: bool,
) -> Result<(), CtlError> {
    let mut body = json!({});
    if let Some(from) = &from {
        body["from"] = json!(from);
    }
    if let Some(to) = &to {
        body["to"] = json!(to);
    }
    if let Some(at) = &at {
        body["at"] = at_value(at)?;
    }
    let question = format!(
        "Switch over from {} to {}{}?",
        from.as_deref().unwrap_or("the current leader"),
        to.as_deref().unwrap_or("the best standby"),
        at.as_deref()
            .map(|a| format!(" at {a}"))
            .unwrap_or_default()
    );
    confirm(&question, force)?;
    carry_out(target, output, "/switchover", body).await
}

pub async fn failover(
    target: &Target,
    output: Output,
    to: String,
    force: bool,
) -> Result<(), CtlError> {
    confirm(
        &format!("Fail over to {to}? Writes acknowledged only by the old primary may be lost."),
        force,
    )?;
    carry_out(target, output, "/failover", json!({ "to": to })).await
}

pub async fn cancel(target: &Target, output: Output) -> Result<(), CtlError> {
    let reply = target
        .send(
            Method::DELETE,
            "/switchover",
            None,
            None,
            Duration::from_secs(10),
        )
        .await?;
    success(&reply)?;
    match output {
        Output::Json => println!("{}", String::from_utf8_lossy(&reply.body)),
        Output::Table => println!("The pending switchover is cancelled"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_is_unix_seconds_or_rfc3339() {
        assert_eq!(at_value("1795292289").unwrap(), json!(1_795_292_289u64));
        assert_eq!(
            at_value("2026-11-21T20:18:09Z").unwrap(),
            json!("2026-11-21T20:18:09Z")
        );
        assert_eq!(at_value("tomorrow").unwrap_err().exit_code(), 2);
        assert_eq!(
            at_value("2026-11-21T22:18:09+02:00").unwrap(),
            json!("2026-11-21T22:18:09+02:00")
        );
    }

    #[test]
    fn at_on_a_date_that_does_not_exist_is_refused() {
        let error = at_value("2026-02-31T00:00:00Z").unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let message = error.to_string();
        assert!(
            message.contains("\"2026-02-31T00:00:00Z\" is not a valid time")
                && message.contains("e.g. 2026-11-21T20:18:09Z"),
            "{message}"
        );
    }
}
