//! SHA-256 of uncompressed content, written as lowercase hex: what a
//! manifest records for every file and chunk, what a restore checks and what
//! an incremental backup compares. (`sha256sum` of a restored file prints
//! the same text.)

use sha2::{Digest, Sha256};

/// The checksum of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// A checksum fed piece by piece (a file read chunk by chunk).
#[derive(Clone, Default)]
pub struct Running(Sha256);

impl Running {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sha256sum() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut running = Running::default();
        running.update(b"a");
        running.update(b"bc");
        assert_eq!(running.finish(), sha256_hex(b"abc"));
    }
}
