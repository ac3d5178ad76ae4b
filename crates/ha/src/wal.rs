//! WAL positions in the core's notes, written as PostgreSQL writes them
//! (`0/516CD60`): the mirror of `pg::Lsn`'s `Display`, since the core
//! depends on no crate of ours.

use std::fmt;

/// A WAL position for a person to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position(pub u64);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::Position;

    #[test]
    fn as_postgresql_writes_them() {
        assert_eq!(Position(0x1_0000_0010).to_string(), "1/10");
        assert_eq!(Position(0x516_CD60).to_string(), "0/516CD60");
    }
}
