//! A store key that does not decode, with real agents, PostgreSQL and etcd:
//! failover still works and every member says which key it is.

use std::time::Duration;

use testkit::{wait_for, AgentCluster, ClusterOptions};

mod common;

use common::{api_url, binary, events, healthy, others, shown, ALL, DEADLINE};

const BAD_KEY: &str = "members/db9";

#[tokio::test]
async fn an_undecodable_member_status_is_named_everywhere_and_failover_still_works() {
    let mut cluster = AgentCluster::start(binary(), ClusterOptions::default())
        .await
        .unwrap();
    let old = healthy(&cluster, &ALL).await;
    let key = format!("{}{BAD_KEY}", cluster.keys.prefix());
    // What a hand edit or a newer agent's other schema leaves behind.
    cluster
        .store
        .put(&key, b"{\"schema\":7,\"name\":\"db9\"}".to_vec(), None)
        .await
        .unwrap();

    // Every member raises an event naming the key.
    wait_for(
        "an event naming the key from every member",
        DEADLINE,
        || async {
            let seen: Vec<String> = events(&cluster)
                .await
                .into_iter()
                .filter(|e| e.kind == "store_key_undecodable" && e.details.contains(&key))
                .map(|e| e.member)
                .collect();
            if ALL.iter().all(|m| seen.iter().any(|s| s == m)) {
                Ok(())
            } else {
                Err(seen)
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));
    let standby = others(&ALL, &old)[0];
    let api = api_url(&cluster, standby).await;
    let client = api::ApiClient::new(None).unwrap();
    let metrics = client
        .send(api::Call::new(hyper::Method::GET, &api, "/metrics"))
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains(&format!(
            "pgwarden_store_undecodable_keys{{member=\"{standby}\"}} 1"
        )),
        "{metrics}"
    );
    let list = common::ctl(&["--api", &api, "list"], &[]).await;
    assert!(
        shown(&list).contains(&format!(" Problem: bad data under `{key}`")),
        "{}",
        shown(&list)
    );
    let log = std::fs::read_to_string(&cluster.member(standby).agent_log).unwrap();
    let named = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains(&key))
        .count();
    assert_eq!(
        named, 1,
        "one error line naming the key, not one a round:\n{log}"
    );

    // The primary's host dies: a standby still takes over.
    cluster.kill_host(&old);
    let new = healthy(&cluster, &others(&ALL, &old)).await;
    assert_ne!(new, old);

    // Fixed: the gauge drops back to 0.
    cluster.store.delete(&key).await.unwrap();
    let api = api_url(&cluster, &new).await;
    wait_for("the gauge back to 0", Duration::from_secs(30), || async {
        let metrics = client
            .send(api::Call::new(hyper::Method::GET, &api, "/metrics"))
            .await
            .map_err(|e| e.to_string())?;
        let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
        if metrics.contains(&format!(
            "pgwarden_store_undecodable_keys{{member=\"{new}\"}} 0"
        )) {
            Ok(())
        } else {
            Err(metrics)
        }
    })
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));
}
