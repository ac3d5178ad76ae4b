//! The start of a connection, in user space: the proxy must read the
//! client's startup packet to route it and the backend's answer to know
//! whether a session began (docs/proxy.md, "Failover as a pause"). Then
//! a few more exchanges are copied here too, so that a short connection
//! (one query, e.g. `pgbench -C`) ends before it is worth handing to the
//! kernel, and at least until the session's cancel key has passed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::cancel::{self, CancelKey, FirstBytes, SessionKey};
use crate::listener::{self, PortContext, Routed};
use crate::routing::Backend;
use crate::startup::{self, Answer};

/// After a failed connect, try again this soon even if the routes are the
/// same (a primary restarting in place keeps its route).
pub const RETRY: Duration = Duration::from_millis(100);
/// The most of a client's opening bytes kept to give to another backend (a
/// startup packet is a few hundred bytes).
const REPLAY_LIMIT: usize = 16 * 1024;
/// Reads copied in user space after the session began: a login's
/// parameters and one or two queries.
const OPENING_READS: usize = 8;

/// What the client's first bytes are.
pub enum Prelude {
    /// The opening of a session: route it.
    Session(Vec<u8>),
    /// A CancelRequest for the session with this key.
    Cancel(CancelKey),
    /// Nothing (or too little to tell) within the startup timeout.
    Silent,
    ClientGone,
}

/// Reads the client's first bytes, before any backend is involved: a client
/// that sends nothing costs no backend connection, and a cancel is told
/// from a session before it is routed.
pub async fn prelude(client: &mut TcpStream, timeout: Duration) -> Prelude {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(timeout, async {
        loop {
            let n = match client.read(&mut buf).await {
                Ok(0) | Err(_) => return Prelude::ClientGone,
                Ok(n) => n,
            };
            bytes.extend_from_slice(&buf[..n]);
            match cancel::classify(&bytes) {
                FirstBytes::Undecided => continue,
                FirstBytes::Cancel(key) => return Prelude::Cancel(key),
                FirstBytes::Session => return Prelude::Session(std::mem::take(&mut bytes)),
            }
        }
    })
    .await;
    read.unwrap_or(Prelude::Silent)
}

/// Why no session began.
pub enum NotBegun {
    /// The client hung up first.
    ClientGone,
    /// No backend would have it within the hold: why.
    Refused(String),
}

/// How one attempt to begin a session ended.
enum Attempt {
    Begun,
    ClientGone,
    /// The backend ended before the session began: why, and whether it
    /// simply closed the connection.
    Retry {
        why: String,
        closed: bool,
    },
}

/// Connects the client to a backend that begins its session. Until the
/// backend has answered, nothing has happened that the client could see:
/// one that closes, refuses for now (shutting down, starting) or loses its
/// route first is replaced by the next route, and the client's bytes so far
/// go to it again. A primary dying or switching over while a client
/// connects costs that client a pause, not an error. `opening` is what the
/// client sent first (see [`prelude`]).
pub async fn begin(
    client: &mut TcpStream,
    ctx: &PortContext,
    opening: Vec<u8>,
    client_read: &mut u64,
) -> Result<Routed, NotBegun> {
    let deadline = Instant::now() + ctx.hold_timeout;
    *client_read += opening.len() as u64;
    let mut sent = opening;
    // "No" answers to encryption requests the client has had.
    let mut answers_forwarded = 0;
    let mut routes = ctx.routes.clone();
    // The backend that last closed on the client's bytes.
    let mut closed_by: Option<Backend> = None;
    loop {
        let mut routed = listener::route(ctx).await.map_err(NotBegun::Refused)?;
        let why = match attempt(
            client,
            &mut routed,
            ctx,
            &mut sent,
            &mut answers_forwarded,
            client_read,
        )
        .await
        {
            Attempt::Begun => return Ok(routed),
            Attempt::ClientGone => return Err(NotBegun::ClientGone),
            // The same backend closing twice on the same bytes is refusing
            // them (a bad startup packet), not dying: the client gets what
            // a direct connection would.
            Attempt::Retry { closed: true, .. } if closed_by.as_ref() == Some(&routed.backend) => {
                return Err(NotBegun::ClientGone)
            }
            Attempt::Retry { why, closed } => {
                closed_by = closed.then(|| routed.backend.clone());
                why
            }
        };
        tracing::debug!("proxy: {why}; trying the next route");
        if Instant::now() >= deadline {
            return Err(NotBegun::Refused(listener::gave_up(&why, ctx.hold_timeout)));
        }
        // Not a tight loop on a backend that keeps saying "not now".
        routes.borrow_and_update();
        tokio::select! {
            _ = routes.changed() => {}
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Relays between the client and `routed` until the backend's answer
/// begins the session.
async fn attempt(
    client: &mut TcpStream,
    routed: &mut Routed,
    ctx: &PortContext,
    sent: &mut Vec<u8>,
    answers_forwarded: &mut usize,
    client_read: &mut u64,
) -> Attempt {
    let member = routed.backend.member.clone();
    let ended = |what: &str, closed: bool| Attempt::Retry {
        why: format!("{member} {what} before the session began"),
        closed,
    };
    if !sent.is_empty() && routed.server.write_all(sent).await.is_err() {
        return ended("closed the connection", true);
    }
    let mut routes = ctx.routes.clone();
    let (mut from_client, mut from_server) = ([0u8; 4096], [0u8; 4096]);
    // "No" answers to encryption requests this backend gave.
    let mut answered = 0;
    loop {
        tokio::select! {
            read = client.read(&mut from_client) => {
                let n = match read {
                    Ok(0) | Err(_) => return Attempt::ClientGone,
                    Ok(n) => n,
                };
                *client_read += n as u64;
                if routed.server.write_all(&from_client[..n]).await.is_err() {
                    return ended("closed the connection", true);
                }
                if sent.len() + n > REPLAY_LIMIT {
                    // Far more than a startup packet: not a session that
                    // can be replayed (nor one whose key can be seen); it
                    // goes where it went.
                    routed.key.unseen();
                    return Attempt::Begun;
                }
                sent.extend_from_slice(&from_client[..n]);
            }
            read = routed.server.read(&mut from_server) => {
                let first = match read {
                    Ok(n) if n > 0 => &from_server[..n],
                    _ => return ended("closed the connection", true),
                };
                routed.read += first.len() as u64;
                match startup::judge(sent, answered, first) {
                    Answer::NotNow => return ended("refused connections for now", false),
                    Answer::NoTls => {
                        answered += 1;
                        // The client has its "no" already when this is a
                        // second backend.
                        if answered > *answers_forwarded {
                            if client.write_all(first).await.is_err() {
                                return Attempt::ClientGone;
                            }
                            *answers_forwarded = answered;
                        }
                    }
                    Answer::Begun => {
                        if startup::answers_a_request(sent, answered) {
                            // TLS or GSSAPI encryption begins.
                            routed.key.unseen();
                        } else {
                            routed.key.see(first);
                        }
                        return match client.write_all(first).await {
                            Ok(()) => Attempt::Begun,
                            Err(_) => Attempt::ClientGone,
                        };
                    }
                }
            }
            _ = listener::lost_route(&mut routes, ctx.port, &routed.backend, routed.term) => {
                return ended("lost its route", false);
            }
        }
    }
}

/// How the opening exchanges ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Opening {
    /// Both sides are still talking: forward the rest.
    Settled,
    /// One side ended (or failed) already: finish in user space, which
    /// sees the same end again.
    Ending,
}

/// How many opening reads to copy in user space at least.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// [`OPENING_READS`]: a short connection ends before it is worth
    /// handing to the kernel.
    Some,
    /// Only until the session's key is known.
    Fewest,
}

/// Buffer of the opening's reads: a read that fills it may have left part
/// of a packet queued (below).
const OPENING_BUFFER: usize = 64 * 1024;

/// Copies reads either way, at least `least` of them and until the session's
/// key is known (`key`, which sees the backend's bytes before the client
/// does), counting the bytes read from each side (kernel forwarding needs
/// them to know when it is done).
///
/// It also goes on until the last read from each side emptied that side's
/// receive queue. The kernel's forwarding program runs over whole queued
/// packets (skbs): one that user space has read part of would be sent on
/// again from its start (Linux 6.18), duplicating bytes in the stream (a
/// query answer larger than the opening's reads then never parses, and the
/// client waits for good). A read that returns less than it asked for
/// took everything queued, so whatever arrives after it is whole packets.
pub async fn opening(
    client: &mut TcpStream,
    server: &mut TcpStream,
    client_read: &mut u64,
    server_read: &mut u64,
    key: &mut SessionKey,
    least: Reads,
) -> Opening {
    let mut buf = vec![0u8; OPENING_BUFFER];
    let mut reads = 0;
    let least = match least {
        Reads::Some => OPENING_READS,
        Reads::Fewest => 0,
    };
    // Whether the last read from each side (server, client) filled the
    // buffer, so that part of a packet may still be queued.
    let mut partial = [false, false];
    while reads < least || !key.settled() || partial.contains(&true) {
        let (ready, from_server, count) = tokio::select! {
            biased;
            ready = server.readable() => (ready.map(|_| ()), true, &mut *server_read),
            ready = client.readable() => (ready.map(|_| ()), false, &mut *client_read),
        };
        if ready.is_err() {
            return Opening::Ending;
        }
        let side = usize::from(!from_server);
        let (src, dst) = if from_server {
            (&mut *server, &mut *client)
        } else {
            (&mut *client, &mut *server)
        };
        let n = match src.try_read(&mut buf) {
            Ok(0) => return Opening::Ending,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                partial[side] = false;
                continue;
            }
            Err(_) => return Opening::Ending,
        };
        partial[side] = n == buf.len();
        reads += 1;
        *count += n as u64;
        if from_server {
            key.see(&buf[..n]);
        }
        if dst.write_all(&buf[..n]).await.is_err() {
            return Opening::Ending;
        }
    }
    Opening::Settled
}
