//! `pgwarden proxy`: layer-4 routing driven by the store (docs/proxy.md).
//!
//! * [`routing`] — pure — from the leader key and member statuses to routes.
//! * [`watcher`] — store I/O — keeps the cluster view and publishes tables.
//! * [`table`] — the published routing table, read lock-free per connection.
//! * [`listener`] — accept, route (or hold), fence.
//! * [`first`] — the startup exchange and first queries, copied in user space.
//! * [`cancel`] — each session's cancel key, and cancel requests sent to
//!   the backend holding the session.
//! * [`relay`] — forwarding until close: in the kernel ([`sockmap`], [`tcp`])
//!   or in user space.
//! * [`metrics`], [`http`] — counters and the `/health` + `/metrics` endpoint.
//! * [`privileges`] — dropping the capabilities kernel forwarding loaded with.
//! * [`config`] — `proxy.toml`.

mod cancel;
pub mod config;
mod first;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod privileges;
mod relay;
pub mod routing;
mod sockmap;
pub mod startup;
pub mod table;
mod tcp;
pub mod watcher;

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use store::cluster::ClusterKeys;
use store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{ProxyConfig, Settings};
pub use metrics::Metrics;
pub use table::Table;

use listener::{Port, PortContext};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr} ({what}): {io}; is another process using the port? Pick another in proxy.toml")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        io: std::io::Error,
    },
}

/// A running proxy. Dropping it stops every listener and closes every
/// forwarded connection.
pub struct Proxy {
    pub read_write: SocketAddr,
    pub read_only: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    routes: watch::Receiver<Arc<Table>>,
    kernel: Option<Arc<sockmap::Kernel>>,
    // Dropped with the proxy: every task watching it ends.
    _shutdown: watch::Sender<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Binds the listeners (port 0 picks a free port; see the fields for
    /// the addresses bound) and starts following the cluster in `store`.
    pub async fn start(
        settings: Settings,
        store: Arc<dyn Store>,
        keys: ClusterKeys,
    ) -> Result<Proxy, ProxyError> {
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|io| ProxyError::Bind { what, addr, io })
        };
        let rw = bind("proxy.read_write", settings.read_write).await?;
        let ro = match settings.read_only {
            Some(addr) => Some(bind("proxy.read_only", addr).await?),
            None => None,
        };
        let http = match settings.http {
            Some(addr) => Some(bind("http.listen", addr).await?),
            None => None,
        };
        let local = |l: &TcpListener| l.local_addr().expect("a bound listener has an address");
        let metrics = Arc::new(Metrics::default());
        let kernel = if settings.kernel_forwarding {
            match sockmap::Kernel::load() {
                Ok(kernel) => {
                    if settings.drop_capabilities {
                        drop_capabilities(&kernel);
                    }
                    Some(Arc::new(kernel))
                }
                Err(err) => {
                    tracing::warn!(
                        "proxy: forwarding in user space: cannot forward in the kernel ({err}); {}",
                        err.advice()
                    );
                    None
                }
            }
        } else {
            None
        };
        let sessions = Arc::new(cancel::Sessions::default());
        let (tx, routes) = watch::channel(Arc::new(Table::default()));
        let (shutdown_tx, shutdown) = watch::channel(());
        let mut proxy = Proxy {
            read_write: local(&rw),
            read_only: ro.as_ref().map(local),
            http: http.as_ref().map(local),
            metrics: metrics.clone(),
            routes: routes.clone(),
            kernel: kernel.clone(),
            _shutdown: shutdown_tx,
            tasks: Vec::new(),
        };
        let watcher = watcher::Watcher {
            store,
            keys,
            policy: settings.policy.clone(),
            store_grace: settings.store_grace,
            refresh: settings.refresh,
            metrics: metrics.clone(),
            tx,
        };
        proxy.tasks.push(tokio::spawn(watcher.run()));
        for (listener, port) in [(Some(rw), Port::ReadWrite), (ro, Port::ReadOnly)] {
            let Some(listener) = listener else { continue };
            let ctx = Arc::new(PortContext {
                port,
                routes: routes.clone(),
                hold_timeout: settings.hold_timeout,
                metrics: metrics.clone(),
                shutdown: shutdown.clone(),
                next: AtomicUsize::new(0),
                kernel: kernel.clone(),
                sessions: sessions.clone(),
                startup_timeout: settings.startup_timeout,
                max_client_connections: settings.max_client_connections,
            });
            proxy
                .tasks
                .push(tokio::spawn(listener::serve(listener, ctx)));
        }
        if let Some(listener) = http {
            proxy.tasks.push(tokio::spawn(http::serve(
                listener, metrics, routes, shutdown,
            )));
        }
        Ok(proxy)
    }

    /// The routing table in force.
    pub fn table(&self) -> Arc<Table> {
        self.routes.borrow().clone()
    }

    /// How many sockets the kernel forwards for now (two per connection),
    /// or `None` when forwarding is in user space.
    pub fn kernel_sockets(&self) -> Option<usize> {
        let kernel = self.kernel.as_ref()?;
        Some(
            kernel
                .active_sockets()
                .expect("the forwarding map can be read"),
        )
    }

    /// How many forwarding slots are taken (two per connection in the
    /// kernel), or `None` when forwarding is in user space.
    pub fn kernel_slots(&self) -> Option<usize> {
        Some(self.kernel.as_ref()?.slots_in_use())
    }

    /// Runs until every task ends (they end only when the proxy is dropped).
    pub async fn wait(&mut self) {
        for task in &mut self.tasks {
            let _ = task.await;
        }
    }
}

/// Gives up the capabilities the program needed to load, where the kernel
/// lets the proxy use the maps without them.
fn drop_capabilities(kernel: &sockmap::Kernel) {
    match privileges::drop_forwarding(|| kernel.try_maps()) {
        Ok(privileges::Outcome::Dropped) => tracing::info!(
            "proxy: kernel forwarding loaded; dropped CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_PERFMON"
        ),
        Ok(privileges::Outcome::NoneHeld) => {}
        Ok(privileges::Outcome::KernelNeedsThem(err)) => tracing::warn!(
            "proxy: keeping CAP_BPF and CAP_NET_ADMIN: this kernel needs them for every connection ({err}; \
             Linux 6.5 and later do not, nor does sysctl kernel.unprivileged_bpf_disabled = 0)"
        ),
        Err(err) => tracing::warn!("proxy: cannot drop the capabilities kernel forwarding needed: {err}"),
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
