//! Whether a backend has begun a client's session, from the first bytes it
//! answers with (PostgreSQL wire protocol, before authentication).
//!
//! Until a session has begun, the proxy may give the client's opening bytes
//! to another backend instead: a primary that dies or shuts down while a
//! client connects then costs that client a pause, not an error.

/// The SSLRequest a client may send before its startup packet.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// The GSSENCRequest, likewise (libpq sends it first when built with GSSAPI).
const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
/// cannot_connect_now: "the database system is shutting down" (or
/// starting up, or not accepting connections).
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// too_many_connections, as PostgreSQL says "sorry, too many clients already".
pub const TOO_MANY_CONNECTIONS: &str = "53300";

/// What the backend's first answer means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A session (or TLS) has begun: forward everything from now on.
    Begun,
    /// "No" to the client's SSLRequest or GSSENCRequest: forward it, and
    /// the session begins with the answer to what the client sends next.
    NoTls,
    /// The backend refuses connections for now (shutting down, starting):
    /// try the next route with the client's bytes again.
    NotNow,
}

/// Judges the backend's first bytes; `client_sent` is everything the client
/// has sent so far, `answered` how many of its encryption requests the
/// backend already answered with "no".
pub fn judge(client_sent: &[u8], answered: usize, first: &[u8]) -> Answer {
    if answers_a_request(client_sent, answered) && first == b"N" {
        return Answer::NoTls;
    }
    if is_cannot_connect_now(first) {
        Answer::NotNow
    } else {
        Answer::Begun
    }
}

/// Whether the backend's next answer is to an encryption request (SSL or
/// GSSAPI; a one-byte "yes" or "no") rather than to the startup packet.
pub fn answers_a_request(client_sent: &[u8], answered: usize) -> bool {
    answered < encryption_requests(client_sent)
}

/// How many encryption requests lead `client_sent`.
fn encryption_requests(client_sent: &[u8]) -> usize {
    client_sent
        .chunks(8)
        .take_while(|packet| *packet == SSL_REQUEST || *packet == GSSENC_REQUEST)
        .count()
}

/// Whether `packet` (one whole packet) asks for encryption.
pub fn is_encryption_request(packet: &[u8]) -> bool {
    packet == SSL_REQUEST || packet == GSSENC_REQUEST
}

/// The most a startup packet may take (PostgreSQL's own limit).
const MAX_STARTUP_PACKET: usize = 10_000;

/// What the first whole packet of a client's bytes is.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet {
    /// Not all there yet.
    Partial,
    /// An SSLRequest or GSSENCRequest (8 bytes).
    EncryptionRequest,
    /// A startup packet, or bytes that are not one: either way the client
    /// has said enough.
    Other,
}

pub fn first_packet(bytes: &[u8]) -> Packet {
    let Some(length) = bytes.get(..4) else {
        return Packet::Partial;
    };
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
    if !(8..=MAX_STARTUP_PACKET).contains(&length) {
        Packet::Other
    } else if bytes.len() < length {
        Packet::Partial
    } else if is_encryption_request(&bytes[..length]) {
        Packet::EncryptionRequest
    } else {
        Packet::Other
    }
}

/// An ErrorResponse (`E`, length, fields) whose SQLSTATE is 57P03, whole in
/// `bytes`.
fn is_cannot_connect_now(bytes: &[u8]) -> bool {
    let Some((&b'E', rest)) = bytes.split_first() else {
        return false;
    };
    let Some(length) = rest.get(..4) else {
        return false;
    };
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
    let Some(fields) = rest.get(4..length) else {
        return false;
    };
    fields
        .split(|b| *b == 0)
        .any(|field| field.first() == Some(&b'C') && &field[1..] == CANNOT_CONNECT_NOW.as_bytes())
}

/// A FATAL ErrorResponse with SQLSTATE `code`, as PostgreSQL sends one: what
/// psql and drivers show as the reason a connection ended.
pub fn fatal(code: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut packet = vec![b'E'];
    packet.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    packet.extend_from_slice(&fields);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str) -> Vec<u8> {
        fatal(code, "the database system is shutting down")
    }

    const STARTUP: &[u8] = &[0, 0, 0, 9, 0, 3, 0, 0, 0];

    #[test]
    fn a_shutting_down_backend_is_not_now_anything_else_begins() {
        assert_eq!(judge(STARTUP, 0, &error("57P03")), Answer::NotNow);
        assert_eq!(judge(STARTUP, 0, &error("28P01")), Answer::Begun);
        // Authentication request: the session has begun.
        assert_eq!(
            judge(STARTUP, 0, &[b'R', 0, 0, 0, 8, 0, 0, 0, 10]),
            Answer::Begun
        );
        // A truncated error cannot be judged: forwarded as it is.
        assert_eq!(judge(STARTUP, 0, &error("57P03")[..10]), Answer::Begun);
    }

    #[test]
    fn no_tls_is_passed_on_and_the_startup_answer_decides() {
        let mut sent = SSL_REQUEST.to_vec();
        assert_eq!(judge(&sent, 0, b"N"), Answer::NoTls);
        assert_eq!(judge(&sent, 0, b"S"), Answer::Begun);
        sent.extend_from_slice(STARTUP);
        assert_eq!(judge(&sent, 1, &error("57P03")), Answer::NotNow);
        assert_eq!(judge(&sent, 1, b"N"), Answer::Begun);
    }

    #[test]
    fn a_gssapi_request_then_an_ssl_request_are_each_answered_before_the_session() {
        let mut sent = GSSENC_REQUEST.to_vec();
        assert_eq!(judge(&sent, 0, b"N"), Answer::NoTls);
        assert_eq!(judge(&sent, 0, b"G"), Answer::Begun);
        sent.extend_from_slice(&SSL_REQUEST);
        assert!(answers_a_request(&sent, 1));
        assert_eq!(judge(&sent, 1, b"N"), Answer::NoTls);
        sent.extend_from_slice(STARTUP);
        assert!(!answers_a_request(&sent, 2));
        assert_eq!(judge(&sent, 2, b"N"), Answer::Begun);
    }
}
