//! Binding, the accept loop (plain or TLS) and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::client::ApiClient;
use crate::error::ApiError;
use crate::metrics::Counters;
use crate::routes::{router, Shared};
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
    });
    let app = router(state);
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(serve(listener, tls, app, stopped));
    tracing::info!("REST API listening on {local_addr}");
    Ok(ApiServer {
        local_addr,
        stop,
        task,
    })
}

async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: axum::Router,
    mut stopped: watch::Receiver<bool>,
) {
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
                let app = app.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    match tls {
                        None => serve_connection(TokioIo::new(tcp), app).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), app).await,
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

async fn serve_connection<I>(io: TokioIo<I>, app: axum::Router)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        app.clone().oneshot(request.map(axum::body::Body::new))
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await
    {
        tracing::debug!("REST API connection ended: {e}");
    }
}
