//! `pgwarden proxy -c proxy.toml`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use store::cluster::ClusterKeys;
use store::{EtcdOptions, EtcdStore, EtcdTls, Store};

pub fn run(file: &Path) -> Result<()> {
    let config = proxy::config::load(file)?;
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(async {
        let s = &config.store;
        let tls = (s.ca_file.is_some() || s.cert_file.is_some()).then(|| EtcdTls {
            ca: s.ca_file.clone(),
            cert: s.cert_file.clone(),
            key: s.key_file.clone(),
            domain: None,
        });
        let store: Arc<dyn Store> = Arc::new(
            EtcdStore::connect(EtcdOptions {
                endpoints: s.endpoints.clone(),
                namespace: String::new(),
                timeout: s.request_timeout,
                username: s.auth.as_ref().map(|a| a.username.clone()),
                password: s.auth.as_ref().map(|a| a.password.expose().to_string()),
                tls,
            })
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
