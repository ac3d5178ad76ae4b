//! `PATCH /config`: a JSON merge patch (RFC 7386) on the dynamic
//! configuration, checked before anything is written.

use serde_json::{Map, Value};
use store::cluster::DynamicConfig;

/// Applies `patch` to `target`: objects merge key by key, `null` removes a
/// key, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else {
        unreachable!("made an object above")
    };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Why a patch was refused: the problems, one per line (422).
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid(pub Vec<String>);

/// `config` with `patch` applied, or every problem with the result.
/// PostgreSQL parameter values may be given as numbers or booleans; they
/// are stored as the strings PostgreSQL reads (`200`, `on`).
pub fn patch_config(config: &DynamicConfig, patch: &Value) -> Result<DynamicConfig, Invalid> {
    if !patch.is_object() {
        return Err(Invalid(vec![
            "a config patch is a JSON object, e.g. {\"ttl_ms\": 10000}".to_string(),
        ]));
    }
    let mut value = serde_json::to_value(config).expect("DynamicConfig is plain data");
    merge_patch(&mut value, patch);
    if let Some(Value::Object(params)) = value.get_mut("parameters") {
        for (name, v) in params.iter_mut() {
            let text = match v {
                Value::String(_) => continue,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => if *b { "on" } else { "off" }.to_string(),
                other => {
                    return Err(Invalid(vec![format!(
                        "parameter {name} = {other} is not a string, number or boolean"
                    )]))
                }
            };
            *v = Value::String(text);
        }
    }
    let patched: DynamicConfig = serde_json::from_value(value).map_err(|e| {
        Invalid(vec![format!(
            "{e}; see docs/configuration.md for the dynamic settings"
        )])
    })?;
    let problems = patched.problems();
    if problems.is_empty() {
        Ok(patched)
    } else {
        Err(Invalid(problems))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rfc7386_examples() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1]});
        merge_patch(&mut doc, &json!({"a": {"b": 1}}));
        assert_eq!(doc, json!({"a": {"b": 1}}));
    }

    #[test]
    fn parameters_are_set_converted_and_removed() {
        let mut config = DynamicConfig::default();
        config
            .parameters
            .insert("work_mem".to_string(), "4MB".to_string());
        let patched = patch_config(
            &config,
            &json!({"ttl_ms": 10000, "parameters": {"work_mem": null, "max_connections": 200, "fsync": true}}),
        )
        .unwrap();
        assert_eq!(patched.ttl_ms, 10_000);
        assert!(!patched.parameters.contains_key("work_mem"));
        assert_eq!(patched.parameters["max_connections"], "200");
        assert_eq!(patched.parameters["fsync"], "on");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let config = DynamicConfig::default();
        let err = patch_config(&config, &json!({"ttl": 1})).unwrap_err();
        assert!(err.0[0].contains("unknown field `ttl`"), "{err:?}");
        let err = patch_config(&config, &json!({"ttl_ms": 500})).unwrap_err();
        assert!(err.0.iter().any(|p| p.contains("ttl_ms = 500")), "{err:?}");
        let err = patch_config(&config, &json!({"ttl_ms": "soon"})).unwrap_err();
        assert!(err.0[0].contains("invalid type"), "{err:?}");
        assert!(patch_config(&config, &json!([1])).is_err());
    }
}
