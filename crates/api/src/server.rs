//! Binding, the accept loop (plain or TLS) with its limits, and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::client::ApiClient;
use crate::error::ApiError;
use crate::limits::{Limits, RefusalLog};
use crate::metrics::Counters;
use crate::routes::{overflow_router, router, AppState, Shared};
use crate::ApiContext;

/// A TLS handshake that takes longer is a stuck or hostile client.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The running API. Dropping it without [`ApiServer::shutdown`] leaves the
/// server task running until the runtime ends.
#[derive(Debug)]
pub struct ApiServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ApiServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, ends open connections (including long polls) and
    /// waits for the server task.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Binds `api.listen` and serves the API on a spawned task.
pub async fn start(ctx: ApiContext) -> Result<ApiServer, ApiError> {
    start_with_limits(ctx, Limits::default()).await
}

/// [`start`] with other limits (tests use short timeouts and small caps).
pub async fn start_with_limits(ctx: ApiContext, limits: Limits) -> Result<ApiServer, ApiError> {
    let tls = match (&ctx.api.cert_file, &ctx.api.key_file) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::from(
            crate::tls::server_config(cert, key).map_err(ApiError::Tls)?,
        )),
        _ => None,
    };
    let client =
        ApiClient::new(ctx.api.ca_file.as_deref()).map_err(|e| ApiError::Tls(e.to_string()))?;
    let listen = ctx.api.listen.clone();
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|source| ApiError::Bind {
            listen: listen.clone(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ApiError::Bind {
        listen: listen.clone(),
        source,
    })?;
    let state = Arc::new(Shared {
        ctx,
        counters: Counters::default(),
        client,
        limits,
        long_polls: Arc::new(Semaphore::new(limits.long_polls)),
    });
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(serve(listener, tls, state, stopped));
    tracing::info!("REST API listening on {local_addr}");
    Ok(ApiServer {
        local_addr,
        stop,
        task,
    })
}

/// Which service a connection gets.
struct Slot {
    app: axum::Router,
    header_read: Duration,
    /// Over the connection limit: one request, then closed.
    overflow: bool,
    // Held until the connection ends.
    _permit: OwnedSemaphorePermit,
}

async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: AppState,
    mut stopped: watch::Receiver<bool>,
) {
    let limits = state.limits;
    let app = router(state.clone());
    let overflow_app = overflow_router(state.clone());
    let served = Arc::new(Semaphore::new(limits.connections));
    let overflow = Arc::new(Semaphore::new(limits.overflow));
    let mut refusals = RefusalLog::default();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning.
                        tracing::warn!("REST API cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let slot = if let Ok(permit) = served.clone().try_acquire_owned() {
                    Slot { app: app.clone(), header_read: limits.header_read, overflow: false, _permit: permit }
                } else {
                    state.counters.refuse_connection();
                    if let Some(count) = refusals.refused(std::time::Instant::now()) {
                        tracing::warn!(
                            "REST API: {count} connection(s) over the limit of {} refused since the last warning (answered 503, or closed); a client opens too many, the last from {peer} (pgwarden_api_refused_total counts them)",
                            limits.connections
                        );
                    }
                    match overflow.clone().try_acquire_owned() {
                        Ok(permit) => Slot { app: overflow_app.clone(), header_read: limits.overflow_header_read, overflow: true, _permit: permit },
                        // Not even room to say so.
                        Err(_) => continue,
                    }
                };
                let tls = tls.clone();
                connections.spawn(async move {
                    match tls {
                        None => serve_connection(TokioIo::new(tcp), slot).await,
                        Some(acceptor) => {
                            let handshake = if slot.overflow { slot.header_read } else { HANDSHAKE_TIMEOUT };
                            match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                                Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), slot).await,
                                Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
                                Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                            }
                        }
                    }
                });
            }
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

async fn serve_connection<I>(io: TokioIo<I>, slot: Slot)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let app = slot.app.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        app.clone().oneshot(request.map(axum::body::Body::new))
    });
    // Without a timer hyper enforces no header timeout at all.
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(slot.header_read)
        .keep_alive(!slot.overflow)
        .serve_connection(io, service)
        .await
    {
        tracing::debug!("REST API connection ended: {e}");
    }
}
