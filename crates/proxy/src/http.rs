//! `GET /health` and `GET /metrics` over plain HTTP/1.1, one request per
//! connection: enough for a load balancer check and a Prometheus scrape.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::table::Table;

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
        let metrics = metrics.clone();
        let table = routes.borrow().clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &metrics, &table))
                .await;
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics, table: &Table) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        ("GET", "/health") => {
            let body = format!("{}\n", table.describe());
            if table.store_lost || table.routes.primary.is_none() {
                ("503 Service Unavailable", "text/plain", body)
            } else {
                ("200 OK", "text/plain", body)
            }
        }
        _ => (
            "404 Not Found",
            "text/plain",
            "try GET /health or GET /metrics\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
