//! `GET /health` and `GET /metrics` over HTTP/1.1 (hyper), one request per
//! connection: enough for a load balancer check and a Prometheus scrape.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::table::Table;

/// A client that has not sent its request headers by then is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a whole connection, so one that stops reading cannot stay.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    routes: watch::Receiver<Arc<Table>>,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(serve_connection(stream, metrics.clone(), routes.clone()));
    }
}

async fn serve_connection(
    stream: TcpStream,
    metrics: Arc<Metrics>,
    routes: watch::Receiver<Arc<Table>>,
) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let table = routes.borrow().clone();
        let response = respond(request.method(), request.uri().path(), &metrics, &table);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    // A broken or slow client costs it its answer; nothing to report.
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
}

fn respond(method: &Method, path: &str, metrics: &Metrics, table: &Table) -> Response<Full<Bytes>> {
    if !matches!(path, "/health" | "/metrics") {
        return text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try GET /health or GET /metrics\n".to_string(),
        );
    }
    if method != Method::GET {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            format!("{path} answers GET only\n"),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    if path == "/metrics" {
        return text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        );
    }
    let status = if table.store_lost || table.routes.primary.is_none() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    text(status, "text/plain", format!("{}\n", table.describe()))
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
