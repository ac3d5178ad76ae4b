//! Moving bytes between a client and its backend without looking at them.
//!
//! Two ways, chosen per process (`Forwarding`): tokio's
//! `copy_bidirectional` (a user-space buffer per direction), or on Linux
//! splice(2) through a pipe per direction, so the bytes never enter user
//! space. Both half-close like TCP: when one side stops sending, the other
//! side's write half is shut down and the opposite direction goes on.

use std::io;

use tokio::net::TcpStream;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarding {
    Copy,
    /// Linux only; elsewhere the same as `Copy`.
    Splice,
}

impl Forwarding {
    /// `PGWARDEN_PROXY_FORWARDING=splice` selects splice(2), for measuring
    /// (bench/proxy); the default is `copy`.
    pub fn from_env() -> Forwarding {
        match std::env::var("PGWARDEN_PROXY_FORWARDING").as_deref() {
            Ok("splice") => Forwarding::Splice,
            _ => Forwarding::Copy,
        }
    }
}

/// Forwards until both directions have ended or one fails.
pub async fn forward(
    mut client: TcpStream,
    mut server: TcpStream,
    how: Forwarding,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if how == Forwarding::Splice {
        return splice::bidirectional(client, server).await;
    }
    let _ = how;
    tokio::io::copy_bidirectional(&mut client, &mut server)
        .await
        .map(drop)
}

#[cfg(target_os = "linux")]
mod splice {
    use std::io;
    use std::os::fd::OwnedFd;

    use nix::fcntl::{splice, OFlag, SpliceFFlags};
    use tokio::io::{AsyncWriteExt, Interest};
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::net::TcpStream;

    /// The default pipe capacity: one splice never moves more.
    const CHUNK: usize = 64 * 1024;

    pub async fn bidirectional(a: TcpStream, b: TcpStream) -> io::Result<()> {
        let (a_read, a_write) = a.into_split();
        let (b_read, b_write) = b.into_split();
        tokio::try_join!(one_way(a_read, b_write), one_way(b_read, a_write))?;
        Ok(())
    }

    async fn one_way(src: OwnedReadHalf, mut dst: OwnedWriteHalf) -> io::Result<()> {
        let (pipe_out, pipe_in): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        loop {
            // The pipe is empty here: everything read was written below.
            let n = loop {
                let socket: &TcpStream = src.as_ref();
                socket.readable().await?;
                // try_io clears the readiness on EAGAIN, so the next
                // readable() waits for new data.
                match socket.try_io(Interest::READABLE, || {
                    splice(socket, None, &pipe_in, None, CHUNK, flags).map_err(io::Error::from)
                }) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                // The sender is done: pass the end on, keep the other way open.
                let _ = dst.shutdown().await;
                return Ok(());
            }
            let mut left = n;
            while left > 0 {
                let socket: &TcpStream = dst.as_ref();
                socket.writable().await?;
                match socket.try_io(Interest::WRITABLE, || {
                    splice(&pipe_out, None, socket, None, left, flags).map_err(io::Error::from)
                }) {
                    Ok(m) => left -= m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}
