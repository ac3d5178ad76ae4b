//! Forwarding once a session runs, until both sides have closed: in the
//! kernel through the sockmap when it is available, else in user space.
//! Either way closes like TCP: when one side stops sending, the other's
//! write half is shut down and the opposite direction goes on; a reset or
//! error on either side closes both. Fencing is the caller's: dropping
//! this future closes both sockets.

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::sockmap::{JoinError, Kernel, Pair, Slot};
use crate::tcp::{self, State};

/// User-space copy buffers: one read takes a whole burst of rows.
const COPY_BUFFER: usize = 64 * 1024;
/// How long held bytes may stay missing behind a connection's end before
/// they count as lost (the kernel retries them every tick).
const LOST_AFTER: Duration = Duration::from_secs(2);

/// Copies in user space until both sides have closed.
pub async fn user_space(client: &mut TcpStream, server: &mut TcpStream) -> io::Result<()> {
    tokio::io::copy_bidirectional_with_sizes(client, server, COPY_BUFFER, COPY_BUFFER)
        .await
        .map(drop)
}

/// Bytes user space read from each side before the hand-over.
#[derive(Clone, Copy, Debug, Default)]
pub struct Read {
    pub client: u64,
    pub server: u64,
}

/// Hands the pair to the kernel and waits for it to end. The caller has
/// written everything it read. When the kernel will not take the pair
/// (maps full), forwards in user space instead.
pub async fn kernel(
    kernel: &Kernel,
    client: TcpStream,
    server: TcpStream,
    read: Read,
) -> io::Result<()> {
    // Out of tokio's reactor: it registers for every readable event, and a
    // readable event fires for each skb even though the data goes on
    // inside the kernel. Writable interest alone wakes us only for a
    // state change (end, reset) or freed send space.
    let (client, server) = (client.into_std()?, server.into_std()?);
    // Bytes already in each send queue: what user space wrote.
    let base = (
        tcp::totals(client.as_raw_fd())?.sent,
        tcp::totals(server.as_raw_fd())?.sent,
    );
    let pair = match kernel.join(client.as_raw_fd(), server.as_raw_fd()) {
        Ok(pair) => pair,
        Err(JoinError::Refused(err)) => {
            // Usually the maps are full; every later connection would say
            // the same, so once is enough for the operator.
            static TOLD: std::sync::Once = std::sync::Once::new();
            TOLD.call_once(|| {
                tracing::warn!(
                    "proxy: the kernel took no more connections to forward ({err}); they are copied in \
                     user space (forwarding in the kernel holds 32768 pairs at most)"
                )
            });
            let mut client = TcpStream::from_std(client)?;
            let mut server = TcpStream::from_std(server)?;
            return user_space(&mut client, &mut server).await;
        }
        Err(JoinError::Broken(err, pair)) => {
            tracing::warn!(
                "proxy: handing a connection to the kernel failed half-way ({err}); it is closed. \
                 If this repeats, set proxy.kernel_forwarding = false"
            );
            // Sockets before slots: a closed socket runs no program.
            drop((client, server));
            drop(pair);
            return Err(err);
        }
    };
    // Declared after `pair`, so dropped (closed) before it.
    let client = Side::new(client, read.client, base.0, pair.slot(0))?;
    let server = Side::new(server, read.server, base.1, pair.slot(1))?;
    watch(&client, &server, &pair).await
}

/// One socket of a pair in the kernel.
struct Side<'p> {
    socket: AsyncFd<std::net::TcpStream>,
    /// Bytes user space read from it before the hand-over.
    read: u64,
    /// Its send-queue total at the hand-over.
    base_sent: u64,
    /// What the kernel did with the bytes it received since.
    slot: &'p Slot,
    /// Held bytes user space read from it since the hand-over.
    held_read: AtomicU64,
    /// Bytes user space wrote into it since the hand-over (the other's
    /// held bytes).
    written: AtomicU64,
}

impl<'p> Side<'p> {
    fn new(
        socket: std::net::TcpStream,
        read: u64,
        base_sent: u64,
        slot: &'p Slot,
    ) -> io::Result<Side<'p>> {
        // SAFETY: a std TcpStream owns its descriptor: it stays open and
        // the same for as long as the AsyncFd owns the stream.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::WRITABLE) }
            .map_err(io::Error::from)?;
        Ok(Side {
            socket,
            read,
            base_sent,
            slot,
            held_read: AtomicU64::new(0),
            written: AtomicU64::new(0),
        })
    }

    fn fd(&self) -> i32 {
        self.socket.as_raw_fd()
    }

    /// Bytes that entered its send queue since the hand-over.
    fn sent(&self) -> io::Result<u64> {
        Ok(tcp::totals(self.fd())?.sent - self.base_sent)
    }

    /// Whether everything this side received (but its FIN) has entered
    /// `to`'s send queue.
    fn passed_on(&self, to: &Side) -> io::Result<bool> {
        let received = tcp::totals(self.fd())?.received;
        // The FIN counts as one byte received.
        let expected = received.saturating_sub(1 + self.read);
        Ok(to.sent()? >= expected)
    }

    /// Writes all of `bytes`, polling for send space: the watch owns the
    /// socket's readiness (clearing it there could leave a second waiter
    /// here asleep for good), and this runs only for held bytes.
    async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        let mut pause = Backoff::new();
        while !bytes.is_empty() {
            match self.socket.get_ref().write(bytes) {
                Ok(n) => {
                    bytes = &bytes[n..];
                    self.written.fetch_add(n as u64, Relaxed);
                    pause = Backoff::new();
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => pause.wait().await,
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// What became of one direction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    Open,
    /// Open, with bytes user space can read (held ones, or ones that raced
    /// the hand-over): an end behind them raises no new event, so it is
    /// looked at again until they are gone.
    Unread,
    /// The sender ended; its bytes are still on their way to the other.
    Draining,
    /// Ended and passed on: the other's write half is shut down.
    Done,
}

/// Watches a pair in the kernel until both sides have ended and every
/// byte has gone through; returns at the first reset or error.
async fn watch(client: &Side<'_>, server: &Side<'_>, pair: &Pair<'_>) -> io::Result<()> {
    // Each direction's held bytes on their own: one waiting for the
    // kernel's queue to drain must not stop the other, which the far end
    // may need before it reads again (an echo).
    let holds = async {
        tokio::try_join!(
            pass_held(client, server, pair, 0),
            pass_held(server, client, pair, 1)
        )
        .map(drop)
    };
    tokio::select! {
        done = ends(client, server) => done,
        Err(err) = holds => Err(err),
    }
}

/// Passes on the direction from socket `i`'s held bytes whenever the
/// sweeper finds some; returns only on an error.
async fn pass_held(from: &Side<'_>, to: &Side<'_>, pair: &Pair<'_>, i: usize) -> io::Result<()> {
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        pair.wait_held(i).await;
        catch_up(from, to, &mut buf).await?;
    }
}

/// Waits for each side to end, passing each end on once its bytes have
/// gone through, until both have; returns at the first reset or error.
async fn ends(client: &Side<'_>, server: &Side<'_>) -> io::Result<()> {
    let mut flows = [Flow::Open, Flow::Open];
    // A socket closed both ways (EPOLLHUP) stays "ready" in tokio for
    // good: it is looked at once, then no more, or this loop would spin.
    let mut hung_up = [false, false];
    let mut pause = Backoff::new();
    loop {
        if flows == [Flow::Done, Flow::Done] {
            return Ok(());
        }
        let polling = flows.contains(&Flow::Draining) || flows.contains(&Flow::Unread);
        tokio::select! {
            guard = client.socket.writable(), if !hung_up[0] => {
                let mut guard = guard?;
                hung_up[0] = guard.ready().is_write_closed();
                event(client, &mut flows[0])?;
                guard.clear_ready();
            }
            guard = server.socket.writable(), if !hung_up[1] => {
                let mut guard = guard?;
                hung_up[1] = guard.ready().is_write_closed();
                event(server, &mut flows[1])?;
                guard.clear_ready();
            }
            // The kernel sends redirected bytes from a worker: poll until
            // it has (only while a side is ending or has unread bytes).
            _ = pause.wait(), if polling => {
                for (side, flow) in [client, server].into_iter().zip(&mut flows) {
                    if *flow == Flow::Unread {
                        event(side, flow)?;
                    }
                }
            }
            // Both hung up and nothing left to pass on.
            else => return Ok(()),
        }
        for (i, (from, to)) in [(client, server), (server, client)].into_iter().enumerate() {
            if flows[i] == Flow::Draining && from.passed_on(to)? {
                to.socket.get_ref().shutdown(Shutdown::Write)?;
                flows[i] = Flow::Done;
            }
        }
    }
}

/// Passes on the bytes the program held from `from` (past its window, see
/// `sockmap::Slot`), after everything it redirected before them, then lets
/// the kernel forward again.
async fn catch_up(from: &Side<'_>, to: &Side<'_>, buf: &mut [u8]) -> io::Result<()> {
    let slot = from.slot;
    if !slot.is_held() {
        return Ok(());
    }
    // Nothing is redirected while bytes are held: this is final.
    let redirected = slot.redirected();
    let mut pause = Backoff::new();
    while to.sent()? < to.written.load(Relaxed) + redirected {
        if let Some(err) = to.socket.get_ref().take_error()? {
            return Err(err);
        }
        pause.wait().await;
    }
    let mut pause = Backoff::new();
    let mut eof_since = None;
    loop {
        let read = from.held_read.load(Relaxed);
        if read > slot.held() {
            return Err(broken(
                "read more than the kernel held: a byte bypassed the forwarding program",
            ));
        }
        match tcp::receive(from.fd(), buf) {
            Ok(0) if slot.held() > read => {
                // The end, with held bytes still queued for a retry (the
                // receive buffer was full): they come. Older kernels drop
                // a socket's queued bytes when it leaves the map at its
                // end; then closing beats hanging.
                let since = *eof_since.get_or_insert_with(Instant::now);
                if since.elapsed() > LOST_AFTER {
                    return Err(broken(
                        "the kernel lost bytes it held for the proxy at the connection's end",
                    ));
                }
                pause.wait().await;
            }
            // The end: nothing more will be held; the watch passes it on.
            Ok(0) => {
                slot.release(read, redirected);
                return Ok(());
            }
            Ok(n) => {
                from.held_read.fetch_add(n as u64, Relaxed);
                to.write_all(&buf[..n]).await?;
                pause = Backoff::new();
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                if slot.held() == read {
                    slot.release(read, redirected);
                    // A byte held just before the release is still ours.
                    if slot.held() == read {
                        return Ok(());
                    }
                } else {
                    // Held but not readable yet: the kernel queues it behind
                    // bytes for this socket's own send queue, or retries it
                    // once the receive buffer has room.
                    pause.wait().await;
                }
            }
            Err(err) => return Err(err),
        }
    }
}

/// A pair the kernel forwarding failed: closed, and said out loud (the
/// relay's other errors are resets, logged at debug).
fn broken(what: &str) -> io::Error {
    tracing::warn!(
        "proxy: closed a connection: {what}; if this repeats (kernels before 6.5), set proxy.kernel_forwarding = false"
    );
    io::Error::other(what.to_string())
}

/// Sleeps growing from 50 µs to 10 ms: for the rare waits on the kernel
/// (its worker sending redirected bytes, a held byte becoming readable).
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_micros(50))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_millis(10));
    }
}

/// Looks at a side after an event: an end starts draining, an error ends all.
fn event(side: &Side, flow: &mut Flow) -> io::Result<()> {
    if let Some(err) = side.socket.get_ref().take_error()? {
        return Err(err);
    }
    if !matches!(*flow, Flow::Open | Flow::Unread) {
        return Ok(());
    }
    *flow = match tcp::state(side.fd())? {
        State::Open => Flow::Open,
        State::Ended => Flow::Draining,
        State::Readable => {
            // Bytes that raced the hand-over into the receive queue go
            // through the program too; held ones are the hold's to copy.
            if !side.slot.is_held() {
                tcp::nudge(side.fd())?;
            }
            Flow::Unread
        }
    };
    Ok(())
}
