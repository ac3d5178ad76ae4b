//! Cluster-wide PostgreSQL parameters: set with `pgwarden ctl config set`,
//! applied by every agent (reload), a restart-only one shown as pending in
//! `ctl list` until `ctl restart`, and managed ones refused.

mod common;

use common::{api_url, binary, healthy, shown, ALL, DEADLINE};
use testkit::{wait_for, AgentCluster, ClusterOptions};

/// Output as printed, for wait errors.
struct Seen(String);

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\n{}", self.0)
    }
}

/// `SHOW name` on `member`'s PostgreSQL, directly.
async fn show(cluster: &AgentCluster, member: &str, name: &str) -> Result<String, String> {
    let value = cluster
        .member(member)
        .query_text(&format!("SHOW {name}"))
        .await
        .map_err(|e| e.to_string())?;
    value.ok_or_else(|| format!("SHOW {name} gave NULL"))
}

/// Each member's `pending_restart` as `ctl -o json list` shows it, or the
/// command's output when it failed or printed no member list.
async fn pending(api: &str) -> Result<Vec<(String, Vec<String>)>, Seen> {
    let out = common::ctl(&["--api", api, "-o", "json", "list"], &[]).await;
    let view: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(view) if out.status.success() => view,
        _ => return Err(Seen(shown(&out))),
    };
    let Some(members) = view["members"].as_array() else {
        return Err(Seen(shown(&out)));
    };
    let members = members
        .iter()
        .map(|m| {
            let names = m["pending_restart"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            (m["name"].as_str().unwrap_or("?").to_string(), names)
        })
        .collect();
    Ok(members)
}

#[tokio::test]
async fn cluster_parameters_reach_every_member_and_restart_only_ones_wait_for_a_restart() {
    let cluster = AgentCluster::start(binary(), ClusterOptions::default())
        .await
        .unwrap();
    let primary = healthy(&cluster, &ALL).await;
    let api = api_url(&cluster, &primary).await;

    let refused = common::ctl(
        &["--api", &api, "config", "set", "parameters.port=5999"],
        &[],
    )
    .await;
    assert_ne!(refused.status.code(), Some(0), "{}", shown(&refused));
    assert!(
        shown(&refused).contains("parameters.port is managed by pgwarden: set member.port instead"),
        "{}",
        shown(&refused)
    );

    let set = common::ctl(
        &[
            "--api",
            &api,
            "config",
            "set",
            "parameters.work_mem=12MB",
            "parameters.wal_buffers=1MB",
        ],
        &[],
    )
    .await;
    assert_eq!(set.status.code(), Some(0), "{}", shown(&set));

    for member in ALL {
        wait_for(
            &format!("work_mem = 12MB on {member}"),
            DEADLINE,
            || async {
                match show(&cluster, member, "work_mem").await {
                    Ok(v) if v == "12MB" => Ok(()),
                    other => Err(other),
                }
            },
        )
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));
    }
    wait_for(
        "wal_buffers pending a restart everywhere",
        DEADLINE,
        || async {
            let seen = pending(&api).await.map_err(|e| format!("{e:?}"))?;
            let all = seen.len() == ALL.len() && seen.iter().all(|(_, p)| p == &["wal_buffers"]);
            if all {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));
    let list = common::ctl(&["--api", &api, "list"], &[]).await;
    assert!(
        shown(&list).contains(&format!(
            " Pending restart: {primary} (wal_buffers); `pgwarden ctl restart {primary}` applies it"
        )),
        "{}",
        shown(&list)
    );

    let standby = ALL.iter().find(|m| **m != primary).unwrap();
    let restart = common::ctl(&["--api", &api, "restart", standby], &[]).await;
    assert_eq!(restart.status.code(), Some(0), "{}", shown(&restart));
    wait_for(
        &format!("{standby} restarted with wal_buffers = 1MB"),
        DEADLINE,
        || async {
            let seen = pending(&api).await;
            let cleared = seen
                .as_ref()
                .is_ok_and(|seen| seen.iter().any(|(name, p)| name == standby && p.is_empty()));
            let value = show(&cluster, standby, "wal_buffers").await;
            if cleared && value.as_deref() == Ok("1MB") {
                Ok(())
            } else {
                Err((seen, value))
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));

    // A value PostgreSQL cannot take is ignored by the reload, and shown:
    // it would keep the member from starting.
    let bad = common::ctl(
        &["--api", &api, "config", "set", "parameters.work_mem=banana"],
        &[],
    )
    .await;
    assert_eq!(bad.status.code(), Some(0), "{}", shown(&bad));
    let listed = |wanted: bool| {
        let api = api.clone();
        let marker = format!(" Config error on {primary}: work_mem");
        move || {
            let (api, marker) = (api.clone(), marker.clone());
            async move {
                let list = common::ctl(&["--api", &api, "list"], &[]).await;
                let text = shown(&list);
                let shows = text.contains(&marker);
                if shows == wanted {
                    Ok(())
                } else {
                    Err(Seen(text))
                }
            }
        }
    };
    wait_for("the bad work_mem listed", DEADLINE, listed(true))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));
    let removed = common::ctl(
        &["--api", &api, "config", "set", "parameters.work_mem=null"],
        &[],
    )
    .await;
    assert_eq!(removed.status.code(), Some(0), "{}", shown(&removed));
    wait_for(
        "the bad work_mem gone from the list",
        DEADLINE,
        listed(false),
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));

    let events = common::ctl(&["--api", &api, "events"], &[]).await;
    assert!(
        shown(&events).contains("parameters_changed"),
        "{}",
        shown(&events)
    );
}

/// A dynamic configuration written straight into the store, past the
/// checks of `ctl config` and the API (#17 point 2): each agent applies
/// the good parameters, leaves out every one that runs code, that pgwarden
/// manages or that would inject a line into pgwarden.conf, and says so
/// once (error log, `parameters_refused` event).
#[tokio::test]
async fn parameters_written_past_the_api_are_checked_by_the_agent() {
    let cluster = AgentCluster::start(
        binary(),
        ClusterOptions {
            members: 1,
            ..ClusterOptions::default()
        },
    )
    .await
    .unwrap();
    let primary = healthy(&cluster, &["db1"]).await;
    let api = api_url(&cluster, &primary).await;

    // What runs code is refused by the API, managed or not.
    for (setting, said) in [
        (
            "parameters.archive_library=x",
            "parameters.archive_library is managed by pgwarden",
        ),
        (
            "parameters.shared_preload_libraries=x",
            "parameters.shared_preload_libraries cannot be set cluster-wide: it runs a program or loads code",
        ),
    ] {
        let refused = common::ctl(&["--api", &api, "config", "set", setting], &[]).await;
        assert_ne!(refused.status.code(), Some(0), "{}", shown(&refused));
        assert!(shown(&refused).contains(said), "{}", shown(&refused));
    }

    let key = cluster.keys.config();
    let mut config = key
        .get(cluster.store.as_ref())
        .await
        .unwrap()
        .map(|c| c.value)
        .unwrap_or_default();
    let bad = [
        ("archive_command", "touch /tmp/pgwarden-pwned-%f"),
        ("shared_preload_libraries", "pwned_library"),
        ("x\nshared_preload_libraries", "pwned_library"),
        ("a = 'b'\nc", "1"),
        (
            "log_line_prefix",
            "x'\nshared_preload_libraries = 'pwned_library",
        ),
    ];
    for (name, value) in bad.iter().chain(&[("work_mem", "12MB")]) {
        config
            .parameters
            .insert(name.to_string(), value.to_string());
    }
    assert_eq!(
        config.problems().len(),
        bad.len(),
        "{:?}",
        config.problems()
    );
    key.put(cluster.store.as_ref(), &config, None)
        .await
        .unwrap();

    wait_for("work_mem = 12MB", DEADLINE, || async {
        match show(&cluster, &primary, "work_mem").await {
            Ok(v) if v == "12MB" => Ok(()),
            other => Err(other),
        }
    })
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));
    let conf = std::fs::read_to_string(
        cluster
            .member(&primary)
            .instance
            .data_dir()
            .join("pgwarden.conf"),
    )
    .unwrap();
    assert!(conf.contains("work_mem = '12MB'\n"), "{conf}");
    for left_out in ["pwned", "archive_command", "log_line_prefix", "a = 'b'"] {
        assert!(!conf.contains(left_out), "{left_out}:\n{conf}");
    }
    assert_eq!(
        show(&cluster, &primary, "shared_preload_libraries")
            .await
            .as_deref(),
        Ok("")
    );
    for name in ["archive_command", "log_line_prefix"] {
        let value = show(&cluster, &primary, name).await.unwrap();
        assert!(!value.contains("pwned"), "{name} = {value}");
    }

    let refused = |events: &[store::cluster::Event]| {
        events
            .iter()
            .filter(|e| e.kind == "parameters_refused" && e.member == primary)
            .map(|e| e.details.clone())
            .collect::<Vec<_>>()
    };
    wait_for("an event per refused parameter", DEADLINE, || async {
        let seen = refused(&common::events(&cluster).await);
        if seen.len() >= bad.len() {
            Ok(())
        } else {
            Err(seen)
        }
    })
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));
    // Several rounds later, still one event and one error line each.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let seen = refused(&common::events(&cluster).await);
    assert_eq!(seen.len(), bad.len(), "{seen:#?}");
    for said in [
        "parameters.archive_command is managed by pgwarden",
        "parameters.shared_preload_libraries cannot be set cluster-wide",
        "`x\\nshared_preload_libraries` is not a PostgreSQL parameter name",
        "parameters.log_line_prefix holds a control character",
    ] {
        assert!(seen.iter().any(|d| d.contains(said)), "{said}: {seen:#?}");
    }
    let log = std::fs::read_to_string(&cluster.member(&primary).agent_log).unwrap();
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("parameters.shared_preload_libraries"))
        .count();
    assert_eq!(errors, 1, "one error line, not one a round:\n{log}");
}
