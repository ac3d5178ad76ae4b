//! The two client ports: accept, pick a backend from the current table
//! (holding the client while there is none), then forward bytes until
//! either side closes or the backend loses its route.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cancel::{self, CancelKey, SessionKey, Sessions};
use crate::first::{self, NotBegun, Opening, Prelude, Reads};
use crate::metrics::{BackendStats, Metrics};
use crate::relay;
use crate::routing::{pick_standby, Backend};
use crate::sockmap::Kernel;
use crate::startup::{self, CANNOT_CONNECT_NOW, TOO_MANY_CONNECTIONS};
use crate::table::Table;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    ReadWrite,
    ReadOnly,
}

impl Port {
    fn name(self) -> &'static str {
        match self {
            Port::ReadWrite => "read-write",
            Port::ReadOnly => "read-only",
        }
    }
}

/// What every connection of one port shares.
pub struct PortContext {
    pub port: Port,
    pub routes: watch::Receiver<Arc<Table>>,
    pub hold_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// Ends every connection when the proxy stops (the sender is dropped).
    pub shutdown: watch::Receiver<()>,
    /// Rotates the start of the least-connections scan so ties spread.
    pub next: AtomicUsize,
    /// Forwarding in the kernel, when it is on and available.
    pub kernel: Option<Arc<Kernel>>,
    /// Every running session's cancel key, for both ports.
    pub sessions: Arc<Sessions>,
    /// How long a new client may take to send its first bytes.
    pub startup_timeout: Duration,
    /// Client connections beyond this many (both ports) are refused.
    pub max_client_connections: u64,
}

/// How long one backend connect may take before the client is held again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn serve(listener: TcpListener, ctx: Arc<PortContext>) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((client, peer)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move { handle(client, peer, ctx).await });
            }
            // Out of file descriptors and the like: the listener itself is
            // fine; back off so the loop does not spin.
            Err(err) => {
                tracing::warn!("proxy: {} port: accept failed: {err}", ctx.port.name());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A routed backend connection and what identifies its route.
pub struct Routed {
    pub server: TcpStream,
    pub backend: Backend,
    /// The primary's term for a read-write route.
    pub term: Option<u64>,
    pub stats: Arc<BackendStats>,
    /// Bytes user space has read from `server`.
    pub read: u64,
    /// The session's cancel key, once the backend has sent it.
    pub key: SessionKey,
}

async fn handle(mut client: TcpStream, peer: SocketAddr, ctx: Arc<PortContext>) {
    let _ = client.set_nodelay(true);
    let counted = Counted::new(&ctx.metrics.client_connections);
    let opening = match first::prelude(&mut client, ctx.startup_timeout).await {
        Prelude::Session(opening) => opening,
        // A cancel is let through beyond the cap: it ends at once, and it is
        // how a client stops the queries that keep the connections busy.
        Prelude::Cancel(key) => return cancel(client, key, &ctx).await,
        Prelude::Silent => {
            ctx.metrics.startup_timeouts_total.fetch_add(1, Relaxed);
            tracing::debug!(
                "proxy: closed {} connection from {peer}: it sent nothing for {:?} (proxy.startup_timeout)",
                ctx.port.name(),
                ctx.startup_timeout
            );
            return;
        }
        Prelude::ClientGone => return,
    };
    if counted.now > ctx.max_client_connections {
        ctx.metrics.too_many_total.fetch_add(1, Relaxed);
        warn_too_many(peer, ctx.max_client_connections);
        return too_many(client, opening, &ctx).await;
    }
    let mut client_read = 0;
    let routed = match first::begin(&mut client, &ctx, opening, &mut client_read).await {
        Ok(routed) => routed,
        Err(NotBegun::ClientGone) => return,
        Err(NotBegun::Refused(why)) => {
            ctx.metrics.refused_total.fetch_add(1, Relaxed);
            tracing::warn!(
                "proxy: {} connection from {peer} refused: {why}",
                ctx.port.name()
            );
            refuse(client, &why).await;
            return;
        }
    };
    let Routed {
        server,
        backend,
        term,
        stats,
        read: server_read,
        mut key,
    } = routed;
    let open = match ctx.port {
        Port::ReadWrite => &stats.open_read_write,
        Port::ReadOnly => &stats.open_read_only,
    };
    let _open = Open::new(open);
    stats.total.fetch_add(1, Relaxed);
    let mut routes = ctx.routes.clone();
    let mut shutdown = ctx.shutdown.clone();
    let read = relay::Read {
        client: client_read,
        server: server_read,
    };
    tokio::select! {
        // The session first: it is what wakes this task nearly every time.
        biased;
        result = session(client, server, read, ctx.kernel.as_deref(), &mut key) => {
            if let Err(err) = result {
                tracing::debug!("proxy: {peer} ↔ {}: {err}", backend.member);
            }
        }
        _ = lost_route(&mut routes, ctx.port, &backend, term) => {
            ctx.metrics.fenced_total.fetch_add(1, Relaxed);
            tracing::info!(
                "proxy: closed {} connection from {peer} to {}: it is no longer routed there",
                ctx.port.name(),
                backend.member
            );
        }
        _ = shutdown.changed() => {}
    }
    // Dropping the session closes both sockets: the client sees the
    // connection end and cannot send another byte to a backend that lost
    // its route. Dropping `key` forgets its cancel key.
}

/// Forwards a begun session until both sides close; the opening is copied
/// in user space, at least until the session's cancel key is known.
async fn session(
    mut client: TcpStream,
    mut server: TcpStream,
    mut read: relay::Read,
    kernel: Option<&Kernel>,
    key: &mut SessionKey,
) -> std::io::Result<()> {
    let least = if kernel.is_some() {
        Reads::Some
    } else {
        Reads::Fewest
    };
    let opened = first::opening(
        &mut client,
        &mut server,
        &mut read.client,
        &mut read.server,
        key,
        least,
    )
    .await;
    match (kernel, opened) {
        (Some(kernel), Opening::Settled) => relay::kernel(kernel, client, server, read).await,
        _ => relay::user_space(&mut client, &mut server).await,
    }
}

/// Sends a CancelRequest once, to the backend holding the session with its
/// key. A key no running session has is dropped, as PostgreSQL drops it,
/// except on the read-write port, where it goes to the primary: an
/// encrypted session's key is invisible to the proxy, and only the session
/// with that key, if any, can be cancelled there. Closing the client's
/// connection then tells it the request was handled.
async fn cancel(client: TcpStream, key: CancelKey, ctx: &PortContext) {
    let backend = ctx.sessions.backend_of(&key).or_else(|| match ctx.port {
        Port::ReadWrite => {
            let table = ctx.routes.borrow().clone();
            let primary = table.routes.primary.as_ref()?;
            (!table.store_lost).then(|| primary.backend.clone())
        }
        Port::ReadOnly => None,
    });
    let Some(backend) = backend else {
        ctx.metrics.cancels_dropped_total.fetch_add(1, Relaxed);
        tracing::debug!(
            "proxy: dropped a cancel request on the {} port: no session has its key",
            ctx.port.name()
        );
        return;
    };
    ctx.metrics.cancels_forwarded_total.fetch_add(1, Relaxed);
    if let Err(err) = cancel::forward(key, &backend).await {
        tracing::warn!(
            "proxy: a cancel request for {} at {} failed: {err}",
            backend.member,
            backend.addr
        );
    }
    drop(client);
}

/// Resolves once `backend` no longer has the route this connection got.
pub(crate) async fn lost_route(
    routes: &mut watch::Receiver<Arc<Table>>,
    port: Port,
    backend: &Backend,
    term: Option<u64>,
) {
    loop {
        if routes.changed().await.is_err() {
            return;
        }
        let table = routes.borrow_and_update().clone();
        let still = match port {
            Port::ReadWrite => {
                !table.store_lost
                    && table
                        .routes
                        .primary
                        .as_ref()
                        .is_some_and(|p| p.backend == *backend && Some(p.term) == term)
            }
            Port::ReadOnly => {
                table.routes.serves_reads(&backend.member)
                    && (table.routes.standbys.iter().any(|s| s.backend == *backend)
                        || table
                            .routes
                            .primary
                            .as_ref()
                            .is_some_and(|p| p.backend == *backend))
            }
        };
        if !still {
            return;
        }
    }
}

/// Picks and connects a backend, holding while there is none (or it does
/// not answer) until `hold_timeout`.
pub(crate) async fn route(ctx: &PortContext) -> Result<Routed, String> {
    let started = Instant::now();
    let deadline = started + ctx.hold_timeout;
    let mut routes = ctx.routes.clone();
    let mut held = Held::new(&ctx.metrics);
    let mut last_problem;
    loop {
        let table = routes.borrow_and_update().clone();
        let choice = choose(&table, ctx);
        match choice {
            Choice::Refuse(why) => return Err(why),
            Choice::Hold(why) => last_problem = why,
            Choice::Backend(backend, term, stats) => {
                // The hold bounds the wait for a route, but a connect always gets a
                // fair chance, also with hold_timeout = 0.
                let remaining = deadline.saturating_duration_since(Instant::now());
                let limit = CONNECT_TIMEOUT.min(remaining.max(Duration::from_secs(1)));
                match tokio::time::timeout(limit, TcpStream::connect(&backend.addr)).await {
                    Ok(Ok(server)) => {
                        let _ = server.set_nodelay(true);
                        held.done();
                        return Ok(Routed {
                            key: SessionKey::new(ctx.sessions.clone(), backend.clone()),
                            server,
                            backend,
                            term,
                            stats,
                            read: 0,
                        });
                    }
                    Ok(Err(err)) => {
                        last_problem =
                            format!("{} at {} refused: {err}", backend.member, backend.addr)
                    }
                    Err(_) => {
                        last_problem =
                            format!("{} at {} did not answer", backend.member, backend.addr)
                    }
                }
                held.start();
                tokio::select! {
                    _ = routes.changed() => {}
                    _ = tokio::time::sleep(first::RETRY) => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
                if Instant::now() >= deadline {
                    return Err(gave_up(&last_problem, ctx.hold_timeout));
                }
                continue;
            }
        }
        held.start();
        tokio::select! {
            changed = routes.changed() => if changed.is_err() {
                return Err("the proxy is stopping".to_string());
            },
            _ = tokio::time::sleep_until(deadline) => {
                return Err(gave_up(&last_problem, ctx.hold_timeout));
            }
        }
    }
}

/// Why a held client is refused, and where to look next.
pub(crate) fn gave_up(problem: &str, hold_timeout: Duration) -> String {
    format!(
        "{problem} for {hold_timeout:?}; the proxy's routing log line says why each member is left out, `pgwarden ctl list` shows the cluster"
    )
}

enum Choice {
    Backend(Backend, Option<u64>, Arc<BackendStats>),
    Hold(String),
    Refuse(String),
}

fn choose(table: &Table, ctx: &PortContext) -> Choice {
    let primary = || {
        table
            .routes
            .primary
            .as_ref()
            .zip(table.primary_stats.as_ref())
            .map(|(p, stats)| Choice::Backend(p.backend.clone(), Some(p.term), stats.clone()))
    };
    match ctx.port {
        Port::ReadWrite => {
            if table.store_lost {
                return Choice::Refuse(
                    "the store is unreachable, so the primary is unknown; check the store"
                        .to_string(),
                );
            }
            primary().unwrap_or_else(|| Choice::Hold("no primary".to_string()))
        }
        Port::ReadOnly => {
            let open: Vec<u64> = table
                .standby_stats
                .iter()
                .map(|s| s.open_read_only.load(Relaxed))
                .collect();
            let start = ctx.next.fetch_add(1, Relaxed);
            if let Some(i) = pick_standby(&table.routes.standbys, &open, start) {
                let standby = &table.routes.standbys[i];
                return Choice::Backend(
                    standby.backend.clone(),
                    None,
                    table.standby_stats[i].clone(),
                );
            }
            if table.routes.reads_to_primary {
                if let Some(choice) = primary() {
                    return choice;
                }
            }
            Choice::Hold("no standby qualifies for reads".to_string())
        }
    }
}

/// Tells the client why, in the PostgreSQL protocol (an ErrorResponse with
/// SQLSTATE 57P03, cannot_connect_now), so psql and drivers show the reason.
async fn refuse(mut client: TcpStream, why: &str) {
    // Read what the client sent first (its startup packet): closing a socket
    // with unread data resets it, and the client would lose the message.
    let mut scratch = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_millis(200), client.read(&mut scratch)).await;
    let packet = startup::fatal(CANNOT_CONNECT_NOW, &format!("pgwarden proxy: {why}"));
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        client.write_all(&packet).await?;
        client.shutdown().await
    })
    .await;
}

/// Says that clients are turned away, once a minute at most: a flood must
/// not flood the log too.
fn warn_too_many(peer: SocketAddr, max: u64) {
    static WARNED: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
        *warned = Some(Instant::now());
        tracing::warn!(
            "proxy: refusing connections (from {peer} and others, on either port): {max} client \
             connections are open, proxy.max_client_connections; raise it in proxy.toml or find \
             the clients that hold them (pgwarden_proxy_too_many_connections_total counts the refused)"
        );
    }
}

/// Turns away a client beyond `proxy.max_client_connections` as PostgreSQL
/// turns one away when it has too many: "no" to its encryption requests,
/// then, after its startup packet, an ErrorResponse with SQLSTATE 53300.
/// `bytes` is what the client sent so far.
async fn too_many(mut client: TcpStream, mut bytes: Vec<u8>, ctx: &PortContext) {
    let packet = startup::fatal(
        TOO_MANY_CONNECTIONS,
        &format!(
            "pgwarden proxy: sorry, too many clients already ({} connections are open, \
             proxy.max_client_connections in proxy.toml)",
            ctx.max_client_connections
        ),
    );
    let _ = tokio::time::timeout(ctx.startup_timeout, async {
        let mut buf = [0u8; 1024];
        loop {
            match startup::first_packet(&bytes) {
                startup::Packet::Partial => {}
                startup::Packet::EncryptionRequest => {
                    client.write_all(b"N").await?;
                    bytes.drain(..8);
                    continue;
                }
                startup::Packet::Other => break,
            }
            match client.read(&mut buf).await? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => bytes.extend_from_slice(&buf[..n]),
            }
        }
        client.write_all(&packet).await?;
        client.shutdown().await
    })
    .await;
}

/// Counts a client connection for as long as it lives.
struct Counted<'a> {
    counter: &'a AtomicU64,
    /// The count with this one.
    now: u64,
}

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicU64) -> Counted<'a> {
        let now = counter.fetch_add(1, Relaxed) + 1;
        Counted { counter, now }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Relaxed);
    }
}

/// Counts a connection open for as long as it lives.
struct Open<'a>(&'a AtomicU64);

impl<'a> Open<'a> {
    fn new(counter: &'a AtomicU64) -> Open<'a> {
        counter.fetch_add(1, Relaxed);
        Open(counter)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// The held-connections gauge and hold time, also when the client gives up.
struct Held<'a> {
    metrics: &'a Metrics,
    since: Option<Instant>,
}

impl<'a> Held<'a> {
    fn new(metrics: &'a Metrics) -> Held<'a> {
        Held {
            metrics,
            since: None,
        }
    }

    fn start(&mut self) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            self.metrics.held.fetch_add(1, Relaxed);
        }
    }

    fn done(&mut self) {
        if let Some(since) = self.since.take() {
            self.metrics.held.fetch_sub(1, Relaxed);
            self.metrics.add_hold(since.elapsed());
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.done();
    }
}
