//! etcd for tests: lab's clusters, and TLS ones with throwaway certificates.

pub use lab::etcd::*;

/// A TLS etcd cluster of `nodes` (1 or 3) with certificates made by
/// [`crate::tls::make_certificates`]; see [`EtcdCluster::start_tls`].
pub async fn start_tls(nodes: usize) -> Result<EtcdCluster, EtcdError> {
    EtcdCluster::start_tls(nodes, crate::tls::make_certificates).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_tls_cluster_leads_and_takes_writes_over_tls() {
        let cluster = start_tls(1).await.unwrap();
        assert!(cluster.endpoint(0).starts_with("https://"));
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
        assert_eq!(leader.unwrap(), 0);
        let store = cluster.store().await.unwrap();
        store.put("/tls/k", b"v".to_vec(), None).await.unwrap();
    }
}
