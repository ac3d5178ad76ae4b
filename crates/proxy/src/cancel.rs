//! Query cancellation (docs/proxy.md, "Cancelling a query"). A client
//! cancels by opening a new connection that sends only a CancelRequest
//! with the process id and secret key its session got in BackendKeyData.
//! The new connection must reach the backend that holds that session: the
//! proxy remembers each session's key while it runs ([`KeyScanner`],
//! [`Sessions`]) and sends each cancel once, to that backend only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::routing::Backend;

/// A CancelRequest's length and code (80877102).
const CANCEL_HEADER: [u8; 8] = [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
/// A CancelRequest: header, process id, secret key.
pub const CANCEL_LEN: usize = 16;
/// How long a backend may take to read a cancel and close: libpq's
/// cancel waits for that close, so the client learns it was handled.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a message before the session's key may take (authentication
/// and parameter messages are small): anything larger is not PostgreSQL.
const MAX_OPENING_MESSAGE: usize = 1 << 20;

/// A session's process id and secret key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub pid: u32,
    pub secret: u32,
}

impl CancelKey {
    fn from_bytes(bytes: &[u8]) -> CancelKey {
        let word =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        CancelKey {
            pid: word(0),
            secret: word(4),
        }
    }

    /// The CancelRequest that carries this key.
    pub fn request(&self) -> [u8; CANCEL_LEN] {
        let mut packet = [0u8; CANCEL_LEN];
        packet[..8].copy_from_slice(&CANCEL_HEADER);
        packet[8..12].copy_from_slice(&self.pid.to_be_bytes());
        packet[12..].copy_from_slice(&self.secret.to_be_bytes());
        packet
    }
}

/// What a client's first bytes say about cancelling.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstBytes {
    /// Too few bytes to tell: they may still become a CancelRequest.
    Undecided,
    Cancel(CancelKey),
    /// Anything else: a session's opening.
    Session,
}

pub fn classify(bytes: &[u8]) -> FirstBytes {
    let head = bytes.len().min(CANCEL_HEADER.len());
    if bytes[..head] != CANCEL_HEADER[..head] {
        FirstBytes::Session
    } else if bytes.len() < CANCEL_LEN {
        FirstBytes::Undecided
    } else {
        FirstBytes::Cancel(CancelKey::from_bytes(&bytes[8..CANCEL_LEN]))
    }
}

/// Every running session's key and the backend that holds it, shared by
/// both ports (a cancel may arrive on either).
#[derive(Debug, Default)]
pub struct Sessions {
    keys: Mutex<HashMap<CancelKey, (u64, Backend)>>,
    next_id: AtomicU64,
}

impl Sessions {
    /// Remembers `key` as held by `backend` until the guard is dropped.
    pub fn register(self: &Arc<Self>, key: CancelKey, backend: &Backend) -> Registered {
        let id = self.next_id.fetch_add(1, Relaxed);
        self.lock().insert(key, (id, backend.clone()));
        Registered {
            sessions: self.clone(),
            key,
            id,
        }
    }

    /// The backend holding the session with `key`, if one runs.
    pub fn backend_of(&self, key: &CancelKey) -> Option<Backend> {
        self.lock().get(key).map(|(_, backend)| backend.clone())
    }

    /// How many sessions are known (for tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CancelKey, (u64, Backend)>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A session's key in [`Sessions`], removed when the session ends.
#[derive(Debug)]
pub struct Registered {
    sessions: Arc<Sessions>,
    key: CancelKey,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut keys = self.sessions.lock();
        // A newer session may have the same key (another server's process
        // id and a random secret colliding): that one stays.
        if keys.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            keys.remove(&self.key);
        }
    }
}

/// Reads the backend's messages from the answer to the startup packet on,
/// until BackendKeyData (the key), ReadyForQuery or an error (no key
/// comes), or bytes that are not PostgreSQL's messages.
#[derive(Debug, Default)]
pub struct KeyScanner {
    /// The current message's type, length and (for BackendKeyData) body,
    /// as far as they have come.
    head: Vec<u8>,
    /// Body bytes of the current message still to pass over.
    skip: usize,
    done: bool,
}

impl KeyScanner {
    /// Whether the key has come or never will.
    pub fn done(&self) -> bool {
        self.done
    }

    pub fn stop(&mut self) {
        self.done = true;
    }

    /// Reads the next bytes from the backend; returns the key when it is in them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<CancelKey> {
        while !bytes.is_empty() && !self.done {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let want = if self.head.first() == Some(&b'K') {
                13
            } else {
                5
            };
            let n = (want - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.head.len() < want {
                continue;
            }
            let length =
                u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]])
                    as usize;
            match self.head[0] {
                b'K' if length == 12 => {
                    if self.head.len() == 13 {
                        self.done = true;
                        return Some(CancelKey::from_bytes(&self.head[5..]));
                    }
                }
                // ReadyForQuery: the key came before it or not at all.
                // ErrorResponse: the session ends.
                b'Z' | b'E' | b'K' => self.done = true,
                _ if !(4..=MAX_OPENING_MESSAGE).contains(&length) => self.done = true,
                _ => {
                    self.skip = length - 4;
                    self.head.clear();
                }
            }
        }
        None
    }
}

/// One session's key: looked for in what its backend sends, then
/// remembered for as long as this lives.
#[derive(Debug)]
pub struct SessionKey {
    sessions: Arc<Sessions>,
    backend: Backend,
    scanner: KeyScanner,
    _registered: Option<Registered>,
}

impl SessionKey {
    pub fn new(sessions: Arc<Sessions>, backend: Backend) -> SessionKey {
        SessionKey {
            sessions,
            backend,
            scanner: KeyScanner::default(),
            _registered: None,
        }
    }

    /// Whether the key has come or never will.
    pub fn settled(&self) -> bool {
        self.scanner.done()
    }

    /// The session is encrypted (or not PostgreSQL's protocol): no key to see.
    pub fn unseen(&mut self) {
        self.scanner.stop();
    }

    /// Reads bytes from `backend` before they go to the client, so the key
    /// is known before the client can send a cancel with it.
    pub fn see(&mut self, bytes: &[u8]) {
        if let Some(key) = self.scanner.feed(bytes) {
            self._registered = Some(self.sessions.register(key, &self.backend));
        }
    }
}

/// Sends a CancelRequest to `backend` and waits for it to close the
/// connection (PostgreSQL answers nothing), so the client's own wait for
/// the close means what it does on a direct connection.
pub async fn forward(key: CancelKey, backend: &Backend) -> std::io::Result<()> {
    tokio::time::timeout(CANCEL_TIMEOUT, async {
        let mut server = TcpStream::connect(&backend.addr).await?;
        server.write_all(&key.request()).await?;
        let mut scratch = [0u8; 64];
        while server.read(&mut scratch).await? > 0 {}
        Ok(())
    })
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn login(key: CancelKey) -> Vec<u8> {
        let mut bytes = message(b'R', &0u32.to_be_bytes());
        bytes.extend(message(b'S', b"server_version\x0015.4\x00"));
        bytes.extend(message(b'K', &key.request()[8..]));
        bytes.extend(message(b'Z', b"I"));
        bytes
    }

    #[test]
    fn the_key_is_found_however_the_bytes_are_split() {
        let key = CancelKey {
            pid: 4242,
            secret: 0xdead_beef,
        };
        let bytes = login(key);
        for size in 1..bytes.len() {
            let mut scanner = KeyScanner::default();
            let found: Vec<_> = bytes.chunks(size).filter_map(|c| scanner.feed(c)).collect();
            assert_eq!(found, [key], "in chunks of {size}");
            assert!(scanner.done());
        }
    }

    #[test]
    fn no_key_before_ready_an_error_or_bytes_that_are_not_messages() {
        for bytes in [
            message(b'Z', b"I"),
            message(b'E', b"SFATAL\0C28P01\0\0"),
            b"db1\nhello".to_vec(),
        ] {
            let mut scanner = KeyScanner::default();
            assert_eq!(scanner.feed(&bytes), None);
            assert!(scanner.done(), "{bytes:?}");
        }
        let mut stopped = KeyScanner::default();
        stopped.stop();
        assert_eq!(stopped.feed(&login(CancelKey { pid: 1, secret: 2 })), None);
    }

    #[test]
    fn a_cancel_request_is_told_from_a_session_by_its_first_sixteen_bytes() {
        let key = CancelKey { pid: 7, secret: 9 };
        let request = key.request();
        assert_eq!(classify(&request[..3]), FirstBytes::Undecided);
        assert_eq!(classify(&request[..12]), FirstBytes::Undecided);
        assert_eq!(classify(&request), FirstBytes::Cancel(key));
        assert_eq!(classify(b"startup"), FirstBytes::Session);
        assert_eq!(
            classify(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]),
            FirstBytes::Session
        );
    }

    #[test]
    fn a_session_s_key_is_forgotten_when_it_ends_but_not_a_newer_one_s() {
        let sessions = Arc::new(Sessions::default());
        let key = CancelKey { pid: 1, secret: 2 };
        let backend = |member: &str| Backend {
            member: member.to_string(),
            addr: "127.0.0.1:5432".to_string(),
        };
        let old = sessions.register(key, &backend("db1"));
        let new = sessions.register(key, &backend("db2"));
        drop(old);
        assert_eq!(sessions.backend_of(&key), Some(backend("db2")));
        drop(new);
        assert_eq!(sessions.backend_of(&key), None);
        assert_eq!(sessions.len(), 0);
    }
}
