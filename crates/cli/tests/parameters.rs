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
