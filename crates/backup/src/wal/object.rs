//! One archived WAL file as an object: a short text header that names the
//! file and carries the size and SHA-256 of its uncompressed content, then
//! the content as one zstd frame.
//!
//! ```text
//! pgwarden-wal 1
//! name 000000010000000000000001
//! size 16777216
//! sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!
//! <zstd frame>
//! ```
//!
//! The header is read without decompressing, so a re-push compares
//! checksums cheaply, and `head -4` on an archived file says what it is.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::compress::StreamError;

const MAGIC: &str = "pgwarden-wal 1";
/// zstd's default, as pgBackRest's: most of the ratio at a fraction of the
/// time of higher levels.
const LEVEL: i32 = 3;
/// PostgreSQL's largest WAL segment size; nothing archived is larger.
const MAX_SIZE: u64 = 1 << 30;

/// What a file is: its size and SHA-256, uncompressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub size: u64,
    pub sha256: String,
}

impl Fingerprint {
    pub fn of(data: &[u8]) -> Fingerprint {
        Fingerprint {
            size: data.len() as u64,
            sha256: hex(&Sha256::digest(data)),
        }
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes, sha256 {}", self.size, self.sha256)
    }
}

/// The header of an archived file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub fingerprint: Fingerprint,
    /// Where the zstd frame starts.
    body: usize,
}

/// The object for `data`, archived as `name`.
pub fn encode(name: &str, data: &[u8]) -> std::io::Result<(Bytes, Fingerprint)> {
    let fingerprint = Fingerprint::of(data);
    let mut object = format!(
        "{MAGIC}\nname {name}\nsize {}\nsha256 {}\n\n",
        fingerprint.size, fingerprint.sha256
    )
    .into_bytes();
    object.extend_from_slice(&zstd::bulk::compress(data, LEVEL)?);
    Ok((Bytes::from(object), fingerprint))
}

/// Reads the header of `object`.
pub fn header(object: &[u8]) -> Result<Header, String> {
    let end = object
        .windows(2)
        .take(512)
        .position(|w| w == b"\n\n")
        .ok_or("it does not start with a pgwarden WAL header")?;
    let text = std::str::from_utf8(&object[..end]).map_err(|_| "its header is not text")?;
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!("its header does not start with \"{MAGIC}\""));
    }
    let (mut name, mut size, mut sha256) = (None, None, None);
    for line in lines {
        match line.split_once(' ') {
            Some(("name", v)) => name = Some(v.to_string()),
            Some(("size", v)) => size = v.parse::<u64>().ok(),
            Some(("sha256", v)) if v.len() == 64 => sha256 = Some(v.to_string()),
            _ => return Err(format!("its header has a line it should not: {line:?}")),
        }
    }
    match (name, size, sha256) {
        (Some(name), Some(size), Some(sha256)) if size <= MAX_SIZE => Ok(Header {
            name,
            fingerprint: Fingerprint { size, sha256 },
            body: end + 2,
        }),
        _ => Err("its header lacks the name, size or checksum".to_string()),
    }
}

/// The content of `object`, checked against its header.
pub fn decode(object: &[u8]) -> Result<(Header, Vec<u8>), String> {
    let mut data = Vec::new();
    let header = decode_each(object, |block| {
        data.extend_from_slice(block);
        Ok::<_, std::convert::Infallible>(())
    })
    .map_err(|e| match e {
        Decode::Damaged(problem) => problem,
        Decode::Sink(never) => match never {},
    })?;
    Ok((header, data))
}

/// Why [`decode_each`] stopped.
#[derive(Debug)]
pub enum Decode<E> {
    /// The object is not what its header says.
    Damaged(String),
    /// `each` failed.
    Sink(E),
}

/// Streams the content of `object` to `each` a block at a time, then
/// checks it against the header: what `each` was given may be used only
/// once this returns `Ok`.
pub fn decode_each<E>(
    object: &[u8],
    mut each: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<Header, Decode<E>> {
    let header = header(object).map_err(Decode::Damaged)?;
    let mut sum = Sha256::new();
    let streamed = crate::compress::decompress_each(
        &object[header.body..],
        header.fingerprint.size,
        |block| {
            sum.update(block);
            each(block)
        },
    );
    streamed.map_err(|e| match e {
        StreamError::Frame(e) => Decode::Damaged(format!("its content does not decompress: {e}")),
        StreamError::Sink(e) => Decode::Sink(e),
    })?;
    let found = hex(&sum.finalize());
    if found != header.fingerprint.sha256 {
        return Err(Decode::Damaged(format!(
            "its content ({} bytes, sha256 {found}) is not what its header says ({})",
            header.fingerprint.size, header.fingerprint
        )));
    }
    Ok(header)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment() -> Vec<u8> {
        // Mostly zeros with some records, like a real segment.
        let mut data = vec![0u8; 1 << 20];
        for (i, b) in data.iter_mut().enumerate().step_by(97).take(5000) {
            *b = (i % 251) as u8;
        }
        data
    }

    #[test]
    fn round_trip_with_a_readable_header() {
        let data = segment();
        let (object, fingerprint) = encode("000000010000000000000001", &data).unwrap();
        assert!(object.len() < data.len() / 10, "{} bytes", object.len());
        let text = String::from_utf8_lossy(&object[..150]);
        assert!(
            text.starts_with(&format!(
                "pgwarden-wal 1\nname 000000010000000000000001\nsize 1048576\nsha256 {}\n\n",
                fingerprint.sha256
            )),
            "{text}"
        );
        let (header, back) = decode(&object).unwrap();
        assert_eq!(header.name, "000000010000000000000001");
        assert_eq!(header.fingerprint, fingerprint);
        assert!(back == data);
        // An empty file (a history file never is, but nothing breaks).
        let (object, _) = encode("00000002.history", b"").unwrap();
        assert_eq!(decode(&object).unwrap().1, b"");
    }

    #[test]
    fn damage_is_found() {
        let data = segment();
        let (object, _) = encode("000000010000000000000001", &data).unwrap();
        let mut flipped = object.to_vec();
        let last = flipped.len() - 10;
        flipped[last] ^= 0x40;
        assert!(decode(&flipped).is_err());
        let truncated = &object[..object.len() - 100];
        assert!(decode(truncated).is_err());
        assert!(header(b"garbage").is_err());
        let mut wrong_sum = object.to_vec();
        let at = String::from_utf8_lossy(&object[..200])
            .find("sha256 ")
            .unwrap()
            + 7;
        wrong_sum[at] = if wrong_sum[at] == b'0' { b'1' } else { b'0' };
        let err = decode(&wrong_sum).unwrap_err();
        assert!(err.contains("is not what its header says"), "{err}");
    }

    #[test]
    fn the_fingerprint_is_sha256() {
        assert_eq!(
            Fingerprint::of(b"abc").sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
