//! A TCP relay that holds back what clients send by a delay the caller
//! changes at will: a store that answers slowly (a loaded etcd, a long
//! round trip) without slowing anything else. Runs in the caller's
//! runtime on a free loopback port; its tasks end when it is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub struct SlowLink {
    pub addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    tasks: Arc<std::sync::Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl SlowLink {
    /// Listens on a free loopback port and relays every connection to
    /// `target`, with no delay until [`SlowLink::set_delay`].
    pub async fn start(target: SocketAddr) -> std::io::Result<SlowLink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let delay_ms = Arc::new(AtomicU64::new(0));
        let tasks = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let accept = {
            let delay_ms = delay_ms.clone();
            let tasks = tasks.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let delay_ms = delay_ms.clone();
                    tasks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .spawn(relay(client, target, delay_ms));
                }
            })
        };
        Ok(SlowLink {
            addr,
            delay_ms,
            tasks,
            accept,
        })
    }

    /// From now on, each byte a client sends reaches the target this much
    /// later (bytes already on their way keep their delay).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.accept.abort();
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
    }
}

async fn relay(client: TcpStream, target: SocketAddr, delay_ms: Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Requests: read as they come, each chunk sent on once its delay is
    // over, in order (a queue, so chunks are not delayed one after another).
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let at =
                        Instant::now() + Duration::from_millis(delay_ms.load(Ordering::Relaxed));
                    if chunks.send((at, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if server_write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let answers = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(reader, writer, answers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_arrive_later_by_the_delay_and_answers_come_straight_back() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 5];
            stream.read_exact(&mut buf).await.unwrap();
            stream.write_all(&buf).await.unwrap();
        });
        let link = SlowLink::start(target).await.unwrap();
        link.set_delay(Duration::from_millis(300));
        let mut client = TcpStream::connect(link.addr).await.unwrap();
        let sent = std::time::Instant::now();
        client.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).await.unwrap();
        let took = sent.elapsed();
        assert_eq!(&buf, b"hello");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }
}
