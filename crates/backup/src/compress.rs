//! zstd frames: every chunk is compressed on its own, so an object holding
//! several (a bundle of small files) can be cut into independent frames by
//! the offsets the manifest records.

use std::io::{self, Read, Write};

/// Bytes handled at a time when streaming a frame: small enough to stay in
/// the CPU's cache between reading, checksumming and (de)compressing them.
/// A whole 64 MiB chunk at each step would go through main memory each
/// time, which is what a shared, busy machine runs short of first.
pub const BLOCK: usize = 1 << 20;

/// zstd's own default level: fast, and what pgBackRest uses by default.
pub const DEFAULT_LEVEL: i32 = 3;

/// One zstd frame holding `data`.
pub fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    zstd::bulk::compress(data, level)
}

/// One zstd frame, compressed as its data arrives.
pub struct FrameWriter(zstd::stream::write::Encoder<'static, Vec<u8>>);

impl FrameWriter {
    /// With `threads` above 1, zstd compresses parts of the frame on that
    /// many threads of its own while the caller reads on: a 1 GiB table
    /// file is then not compressed on one core (the frame's format is the
    /// same).
    pub fn new(level: i32, threads: u32) -> io::Result<FrameWriter> {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), level)?;
        if threads > 1 {
            encoder.multithread(threads)?;
        }
        Ok(FrameWriter(encoder))
    }

    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }

    /// The whole frame.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        self.0.finish()
    }
}

/// Streams the content of one frame, which must be exactly `size` bytes
/// long, to `each` a [`BLOCK`] at a time; stops at `each`'s first error.
pub fn decompress_each<E>(
    frame: &[u8],
    size: u64,
    mut each: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), StreamError<E>> {
    let mut decoder = zstd::stream::read::Decoder::with_buffer(frame)
        .map_err(StreamError::Frame)?
        .single_frame();
    let mut block = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let n = read_full(&mut decoder, &mut block).map_err(StreamError::Frame)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > size {
            let problem = format!("the frame holds more than {size} bytes");
            return Err(StreamError::Frame(invalid(problem)));
        }
        each(&block[..n]).map_err(StreamError::Sink)?;
    }
    if total != size {
        let problem = format!("the frame holds {total} bytes, not {size}");
        return Err(StreamError::Frame(invalid(problem)));
    }
    Ok(())
}

/// Why streaming a frame stopped: the frame itself, or what it was fed to.
#[derive(Debug)]
pub enum StreamError<E> {
    Frame(io::Error),
    Sink(E),
}

fn invalid(problem: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, problem)
}

/// Reads until `buf` is full or the end: fewer bytes only at the end.
pub fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The content of one frame, which must be exactly `size` bytes long.
pub fn decompress(frame: &[u8], size: u64) -> io::Result<Vec<u8>> {
    let capacity = usize::try_from(size).map_err(io::Error::other)?;
    let data = zstd::bulk::decompress(frame, capacity)?;
    if data.len() as u64 != size {
        let problem = format!("the frame holds {} bytes, not {size}", data.len());
        return Err(invalid(problem));
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
    fn a_frame_written_piece_by_piece_streams_back_in_blocks() {
        let data: Vec<u8> = (0..3 * BLOCK + 17).map(|i| (i % 7) as u8).collect();
        let frames = [1, 2].map(|threads| {
            let mut writer = FrameWriter::new(DEFAULT_LEVEL, threads).unwrap();
            for piece in data.chunks(1000) {
                writer.write(piece).unwrap();
            }
            writer.finish().unwrap()
        });
        assert_eq!(decompress(&frames[1], data.len() as u64).unwrap(), data);
        let frame = &frames[0];
        assert_eq!(decompress(frame, data.len() as u64).unwrap(), data);
        let mut back = Vec::new();
        let mut blocks = 0;
        decompress_each(frame, data.len() as u64, |block| {
            blocks += 1;
            back.extend_from_slice(block);
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!((back, blocks), (data.clone(), 4));
        let size = data.len() as u64;
        for wrong in [size - 1, size + 1] {
            let result = decompress_each(frame, wrong, |_| Ok::<_, ()>(()));
            assert!(matches!(result, Err(StreamError::Frame(_))), "{wrong}");
        }
        let result = decompress_each(frame, size, |_| Err("full"));
        assert!(matches!(result, Err(StreamError::Sink("full"))));
    }

    #[test]
    fn empty_data_is_a_frame_too() {
        let frame = compress(b"", DEFAULT_LEVEL).unwrap();
        assert_eq!(decompress(&frame, 0).unwrap(), b"");
    }
}
