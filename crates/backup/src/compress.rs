//! zstd frames: every chunk is compressed on its own, so an object holding
//! several (a bundle of small files) can be cut into independent frames by
//! the offsets the manifest records.

use std::io;

/// zstd's own default level: fast, and what pgBackRest uses by default.
pub const DEFAULT_LEVEL: i32 = 3;

/// One zstd frame holding `data`.
pub fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    zstd::bulk::compress(data, level)
}

/// The content of one frame, which must be exactly `size` bytes long.
pub fn decompress(frame: &[u8], size: u64) -> io::Result<Vec<u8>> {
    let capacity = usize::try_from(size).map_err(io::Error::other)?;
    let data = zstd::bulk::decompress(frame, capacity)?;
    if data.len() as u64 != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the frame holds {} bytes, not {size}", data.len()),
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_the_size() {
        let data = b"pgwarden ".repeat(1000);
        let frame = compress(&data, DEFAULT_LEVEL).unwrap();
        assert!(frame.len() < data.len() / 10);
        assert_eq!(decompress(&frame, data.len() as u64).unwrap(), data);
        assert!(decompress(&frame, data.len() as u64 + 1).is_err());
        assert!(decompress(&frame, 10).is_err());
    }

    #[test]
    fn empty_data_is_a_frame_too() {
        let frame = compress(b"", DEFAULT_LEVEL).unwrap();
        assert_eq!(decompress(&frame, 0).unwrap(), b"");
    }
}
