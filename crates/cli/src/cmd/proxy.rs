//! `pgwarden proxy -c proxy.toml`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use store::cluster::ClusterKeys;
use store::{EtcdOptions, EtcdStore, Store};

pub fn run(file: &Path) -> Result<()> {
    let config = proxy::config::load(file)?;
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(async {
        let s = &config.store;
        let store: Arc<dyn Store> = Arc::new(
            EtcdStore::connect(EtcdOptions::from_config(s))
                .await
                .with_context(|| {
                    format!(
                        "reach the store at {:?}; check [store] endpoints in {}",
                        s.endpoints,
                        file.display()
                    )
                })?,
        );
        let keys = ClusterKeys::new(&s.namespace, &s.cluster)?;
        let mut proxy = proxy::Proxy::start(config.settings.clone(), store, keys).await?;
        tracing::info!(
            "proxy for cluster {}: read-write on {}, read-only on {}, http on {}",
            s.cluster,
            proxy.read_write,
            proxy
                .read_only
                .map_or("(off)".to_string(), |a| a.to_string()),
            proxy.http.map_or("(off)".to_string(), |a| a.to_string()),
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("install the SIGTERM handler")?;
        tokio::select! {
            _ = proxy.wait() => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("proxy stopping: closing every connection");
        drop(proxy);
        Ok(())
    })
}
