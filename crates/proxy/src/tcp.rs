//! The few TCP socket calls std and tokio do not offer, for kernel
//! forwarding: a socket's cookie, running queued bytes through the
//! sockmap program, whether a socket has ended, and how many bytes have
//! gone through it.

use std::io;
use std::os::fd::RawFd;

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn getsockopt<T: Default>(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<T> {
    let mut value = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is a writable T of `len` bytes; the kernel writes at
    // most `len` bytes. An invalid fd only yields EBADF.
    check(unsafe { libc::getsockopt(fd, level, name, &mut value as *mut T as *mut _, &mut len) })?;
    Ok(value)
}

/// The socket's cookie: a 64-bit id unique for the kernel's uptime.
pub fn cookie(fd: RawFd) -> io::Result<u64> {
    getsockopt(fd, libc::SOL_SOCKET, libc::SO_COOKIE)
}

/// Setting SO_RCVLOWAT makes TCP check for queued data and, when there is
/// some, call the socket's data-ready hook: for a socket in a sockmap,
/// that runs the queued bytes through the verdict program.
pub fn nudge(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: passes a pointer to a live c_int and its size.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            &one as *const libc::c_int as *const _,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
}

/// What a socket whose receiving user space never sees data says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Open,
    /// The peer shut down its sending side (FIN).
    Ended,
    /// Data surfaced in user space after all (the sockmap let it pass).
    Readable,
}

/// Peeks without blocking: EOF, nothing yet, or data.
pub fn state(fd: RawFd) -> io::Result<State> {
    let mut byte = [0u8; 1];
    // MSG_PEEK leaves the data queued.
    match recv(fd, &mut byte, libc::MSG_PEEK) {
        Ok(0) => Ok(State::Ended),
        Ok(_) => Ok(State::Readable),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(State::Open),
        Err(err) => Err(err),
    }
}

/// Reads what is there without blocking (WouldBlock when nothing is).
pub fn receive(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    recv(fd, buf, 0)
}

fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The start of struct tcp_info (include/uapi/linux/tcp.h) up to the
/// RFC 4898 byte counters.
#[repr(C)]
#[derive(Default)]
struct TcpInfo {
    _head: [u8; 8],
    _u32s: [u32; 24],
    _pacing: [u64; 2],
    bytes_acked: u64,
    bytes_received: u64,
}

/// Bytes that ever entered the socket's send queue, and that it ever
/// received, over its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub sent: u64,
    pub received: u64,
}

pub fn totals(fd: RawFd) -> io::Result<Totals> {
    let info: TcpInfo = getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO)?;
    let mut unacked: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int: the bytes in the send queue not
    // yet acknowledged.
    check(unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut unacked as *mut libc::c_int) })?;
    Ok(Totals {
        sent: info.bytes_acked + unacked.max(0) as u64,
        received: info.bytes_received,
    })
}
