//! `config show|set|edit`, `pause`, `resume`.

use std::time::Duration;

use api::client::Reply;
use api::model::ConfigView;
use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};
use store::cluster::DynamicConfig;

use super::target::{success, Target};
use super::{CtlError, Output};

/// `KEY=VALUE` settings as one merge patch. The value is JSON when it
/// parses as JSON (`10000`, `true`, `null`), else a string (`8MB`).
/// `parameters.NAME` addresses a PostgreSQL parameter (NAME may contain
/// dots, like `auto_explain.log_min_duration`).
pub fn settings_patch(settings: &[String]) -> Result<Value, CtlError> {
    let mut patch = Map::new();
    for setting in settings {
        let Some((key, text)) = setting.split_once('=') else {
            return Err(CtlError::Usage(format!(
                "`{setting}` is not KEY=VALUE; e.g. ttl_ms=10000 or parameters.work_mem=8MB"
            )));
        };
        let value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()));
        match key.split_once('.') {
            Some(("parameters", name)) if !name.is_empty() => {
                let parameters = patch
                    .entry("parameters")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .ok_or_else(|| CtlError::Usage("parameters is set twice".to_string()))?;
                parameters.insert(name.to_string(), value);
            }
            None if !key.is_empty() => {
                patch.insert(key.to_string(), value);
            }
            _ => {
                return Err(CtlError::Usage(format!(
                    "`{key}` is not a setting; settings are top-level names (ttl_ms) or parameters.NAME"
                )))
            }
        }
    }
    Ok(Value::Object(patch))
}

/// The merge patch that turns `old` into `new` (keys gone become `null`).
pub fn diff_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for (key, old_value) in old {
                match new.get(key) {
                    None => {
                        patch.insert(key.clone(), Value::Null);
                    }
                    Some(new_value) if new_value != old_value => {
                        patch.insert(key.clone(), diff_patch(old_value, new_value));
                    }
                    Some(_) => {}
                }
            }
            for (key, new_value) in new {
                if !old.contains_key(key) {
                    patch.insert(key.clone(), new_value.clone());
                }
            }
            Value::Object(patch)
        }
        (_, new) => new.clone(),
    }
}

fn print_config(output: Output, shown: &ConfigView) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(shown).expect("plain data")
        ),
        Output::Table => {
            println!("# revision {}", shown.revision);
            print!("{}", toml::to_string(&shown.config).expect("plain data"));
        }
    }
}

pub async fn show(target: &Target, output: Output) -> Result<(), CtlError> {
    print_config(output, &target.get("/config").await?);
    Ok(())
}

async fn patch(target: &Target, body: &Value, if_match: Option<i64>) -> Result<Reply, CtlError> {
    target
        .send(
            Method::PATCH,
            "/config",
            Some(body),
            if_match,
            Duration::from_secs(10),
        )
        .await
}

/// The configuration a successful change answers with.
fn changed(reply: &Reply) -> Result<ConfigView, CtlError> {
    success(reply)?;
    reply.json().map_err(|e| CtlError::Refused(e.to_string()))
}

pub async fn set(target: &Target, output: Output, settings: &[String]) -> Result<(), CtlError> {
    let body = settings_patch(settings)?;
    let reply = patch(target, &body, None).await?;
    print_config(output, &changed(&reply)?);
    Ok(())
}

pub async fn pause(target: &Target, output: Output, paused: bool) -> Result<(), CtlError> {
    let path = if paused { "/pause" } else { "/resume" };
    let reply = target
        .send(Method::POST, path, None, None, Duration::from_secs(10))
        .await?;
    success(&reply)?;
    match output {
        Output::Json => println!("{}", String::from_utf8_lossy(&reply.body)),
        Output::Table if paused => println!("Automatic failover is paused (maintenance mode)"),
        Output::Table => println!("Automatic failover is resumed"),
    }
    Ok(())
}

/// Opens $EDITOR (else `vi`) on the TOML form; saves the changes only if
/// they are valid and nobody changed the configuration meanwhile.
pub async fn edit(target: &Target, output: Output) -> Result<(), CtlError> {
    let shown: ConfigView = target.get("/config").await?;
    let text = toml::to_string(&shown.config).expect("plain data");
    let dir = tempfile::tempdir()
        .map_err(|e| CtlError::Usage(format!("cannot make a temporary file: {e}")))?;
    let path = dir.path().join("pgwarden-config.toml");
    std::fs::write(&path, &text)
        .map_err(|e| CtlError::Usage(format!("cannot write {}: {e}", path.display())))?;
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string());
    // Through the shell, so that EDITOR may carry arguments ("code -w").
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .map_err(|e| CtlError::Usage(format!("cannot run the editor `{editor}`: {e}")))?;
    if !status.success() {
        return Err(CtlError::Usage(format!(
            "the editor `{editor}` failed ({status}); nothing was changed"
        )));
    }
    let edited = std::fs::read_to_string(&path)
        .map_err(|e| CtlError::Usage(format!("cannot read back {}: {e}", path.display())))?;
    if edited == text {
        eprintln!("No changes.");
        return Ok(());
    }
    let new: DynamicConfig = toml::from_str(&edited).map_err(|e| {
        CtlError::Usage(format!(
            "the edited configuration is not valid, nothing was changed: {e}"
        ))
    })?;
    let problems = new.problems();
    if !problems.is_empty() {
        return Err(CtlError::Usage(format!(
            "the edited configuration is not valid, nothing was changed: {}",
            problems.join("; ")
        )));
    }
    let old = serde_json::to_value(&shown.config).expect("plain data");
    let body = diff_patch(&old, &serde_json::to_value(&new).expect("plain data"));
    let reply = patch(target, &body, Some(shown.revision)).await?;
    if reply.status == StatusCode::PRECONDITION_FAILED {
        return Err(CtlError::Refused(format!(
            "someone else changed the configuration while you edited it; nothing was saved: run `pgwarden ctl config edit` again ({})",
            reply.error_message()
        )));
    }
    print_config(output, &changed(&reply)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn settings_become_a_merge_patch() {
        let patch = settings_patch(&strings(&[
            "ttl_ms=10000",
            "paused=true",
            "parameters.work_mem=8MB",
            "parameters.auto_explain.log_min_duration=100",
            "parameters.old=null",
        ]))
        .unwrap();
        assert_eq!(
            patch,
            json!({"ttl_ms": 10000, "paused": true, "parameters": {
                "work_mem": "8MB", "auto_explain.log_min_duration": 100, "old": null}})
        );
        for bad in ["ttl_ms", "=1", "parameters.=1", "a.b=1"] {
            assert_eq!(
                settings_patch(&strings(&[bad])).unwrap_err().exit_code(),
                2,
                "{bad}"
            );
        }
    }

    #[test]
    fn an_edit_becomes_the_smallest_patch() {
        let old = json!({"ttl_ms": 3000, "paused": false, "parameters": {"a": "1", "b": "2"}});
        let new = json!({"ttl_ms": 3000, "paused": true, "parameters": {"a": "1", "c": "3"}});
        assert_eq!(
            diff_patch(&old, &new),
            json!({"paused": true, "parameters": {"b": null, "c": "3"}})
        );
    }
}
