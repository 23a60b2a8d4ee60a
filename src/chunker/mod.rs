//! Content-defined chunking: FastCDC (2020) with the gear table seeded from
//! the repository key, run over large read blocks (twice the speed of
//! re-reading through `StreamCDC`, see BUILD.md).

use crate::error::{FormatError, FormatResult};
use fastcdc::v2020::{cut_gear, get_gear_with_seed, select_masks, Normalization};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::{self, Read};

/// Chunk size limits, fixed at `init` and stored in the repository config.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Derives min = avg/2 and max = avg*8, the shape of the defaults.
    pub fn from_average(avg_size: u32) -> FormatResult<ChunkerParams> {
        let p = ChunkerParams {
            min_size: avg_size / 2,
            avg_size,
            max_size: avg_size.saturating_mul(8),
        };
        p.validate()?;
        Ok(p)
    }

    /// fastcdc only checks its limits with `debug_assert!`, so a config read
    /// from storage must be validated here.
    pub fn validate(&self) -> FormatResult<()> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let (min, avg, max) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        let bad = |why: String| Err(FormatError::ChunkerParams(why));
        if !(MINIMUM_MIN..=MINIMUM_MAX).contains(&min) {
            return bad(format!(
                "min size {min} outside {MINIMUM_MIN}..={MINIMUM_MAX}"
            ));
        }
        if !(AVERAGE_MIN..=AVERAGE_MAX).contains(&avg) {
            return bad(format!(
                "average size {avg} outside {AVERAGE_MIN}..={AVERAGE_MAX}"
            ));
        }
        if !(MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max) {
            return bad(format!(
                "max size {max} outside {MAXIMUM_MIN}..={MAXIMUM_MAX}"
            ));
        }
        if min % 2 != 0 || avg % 2 != 0 || max % 2 != 0 {
            return bad("sizes must be even".into());
        }
        if !(min <= avg && avg <= max) {
            return bad(format!("need min ≤ avg ≤ max, got {min}/{avg}/{max}"));
        }
        Ok(())
    }
}

/// A configured chunker: parameters, masks and the seeded gear tables.
#[derive(Clone)]
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    masks: (u64, u64),
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
}

impl Chunker {
    pub fn new(params: ChunkerParams, seed: u64) -> FormatResult<Chunker> {
        params.validate()?;
        let (gear, gear_ls) = get_gear_with_seed(seed);
        Ok(Chunker {
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max: params.max_size as usize,
            masks: select_masks(params.avg_size as usize, Normalization::Level1),
            gear,
            gear_ls,
        })
    }

    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Length of the next chunk at the start of `data`. `data` must hold at
    /// least `max` bytes unless it is the end of the stream.
    pub fn next_cut(&self, data: &[u8]) -> usize {
        if data.len() <= self.min {
            return data.len();
        }
        let (mask_s, mask_l) = self.masks;
        let (_, len) = cut_gear(
            data,
            self.min,
            self.avg,
            self.max,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        len
    }

    /// Cut points (chunk lengths) of an in-memory buffer.
    pub fn chunk_lengths(&self, mut data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let n = self.next_cut(data);
            out.push(n);
            data = &data[n..];
        }
        out
    }

    pub fn stream<R: Read>(&self, reader: R) -> ChunkStream<'_, R> {
        self.stream_reusing(reader, Vec::new())
    }

    /// Like [`Chunker::stream`], reading through `buffer` (left by an earlier
    /// stream's [`ChunkStream::into_buffer`]): a backup of many files then
    /// allocates and zeroes its read window once, not once per file.
    pub fn stream_reusing<R: Read>(&self, reader: R, buffer: Vec<u8>) -> ChunkStream<'_, R> {
        ChunkStream {
            chunker: self,
            reader,
            buf: buffer,
            start: 0,
            end: 0,
            eof: false,
        }
    }
}

/// Chunks of a `Read`, each an owned buffer. Reads into a window that grows
/// only as far as the data needs and carries the uncut tail to its front.
pub struct ChunkStream<'c, R> {
    chunker: &'c Chunker,
    reader: R,
    /// The window; bytes `start..end` are read and not yet cut. Its length
    /// only grows (zeroed once), reads land in `end..`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> ChunkStream<'_, R> {
    /// The read window, for the next stream.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// The next chunk, borrowed from the read window until the next call;
    /// `None` at the end of the stream. A caller that already has the chunk
    /// (most of an unchanged stream) never copies it.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            let pending = &self.buf[self.start..self.end];
            if !pending.is_empty() {
                let n = self.chunker.next_cut(pending);
                // FastCDC decides at each byte from the bytes before it, so a
                // cut inside what is read is final. One at its end is final
                // only at the end of the stream or at the maximum size.
                if n < pending.len() || n == self.chunker.max || self.eof {
                    let chunk = self.start..self.start + n;
                    self.start += n;
                    return Ok(Some(&self.buf[chunk]));
                }
            } else if self.eof {
                return Ok(None);
            }
            self.fill()?;
        }
    }

    /// Makes room behind the pending bytes and reads until the window is
    /// full or the stream ends.
    fn fill(&mut self) -> io::Result<()> {
        let pending = self.end - self.start;
        // Pending bytes always fit (a full maximum chunk would have been cut).
        // Grow, from 64 KiB, while they take a quarter of the window or more:
        // most files are small, and the tail moved to the front below stays
        // small next to each read. Pending bytes are less than a maximum
        // chunk, so an eighth more leaves every read at least that much room
        // (twice the maximum, as before, kept 16 MiB resident for no gain).
        let limit = self.chunker.max + self.chunker.max / 8;
        if self.buf.len() < limit && pending * 4 >= self.buf.len() {
            let grow_to = (self.buf.len().max(32 * 1024) * 2).min(limit);
            self.buf.resize(grow_to, 0);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end = pending;
            self.start = 0;
        }
        while !self.eof && self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for ChunkStream<'_, R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().map(|c| c.map(<[u8]>::to_vec)).transpose()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic incompressible bytes (xorshift64), for tests.
    pub(crate) fn pseudo_random(len: usize, mut state: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn stream_cuts_match_in_memory_cuts_and_reassemble() {
        let p = ChunkerParams::from_average(16 * 1024).unwrap();
        let c = Chunker::new(p, 42).unwrap();
        let data = pseudo_random(3 * 1024 * 1024 + 17, 7);
        let expect = c.chunk_lengths(&data);
        // a reader that returns short reads exercises the carry-over
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = out.len().min(self.0.len()).min(10_007);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let chunks: Vec<Vec<u8>> = c.stream(Dribble(&data)).map(|r| r.unwrap()).collect();
        assert_eq!(chunks.iter().map(|c| c.len()).collect::<Vec<_>>(), expect);
        assert_eq!(chunks.concat(), data);
        assert!(
            expect.len() > 50,
            "expected many chunks, got {}",
            expect.len()
        );
    }

    #[test]
    fn default_sizes_through_a_pipe_sized_reader_cut_as_in_memory() {
        let c = Chunker::new(ChunkerParams::default(), 7).unwrap();
        // runs of zeros force maximum-size chunks, noise gives normal cuts
        let mut data = pseudo_random(20 << 20, 3);
        data[(5 << 20)..(14 << 20)].fill(0);
        let expect = c.chunk_lengths(&data);
        assert!(expect.contains(&c.max_size()), "{expect:?}");
        struct Pipe<'a>(&'a [u8]);
        impl Read for Pipe<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = out.len().min(self.0.len()).min(64 * 1024);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut stream = c.stream(Pipe(&data));
        let mut lengths = Vec::new();
        let mut joined = Vec::new();
        while let Some(chunk) = stream.next_chunk().unwrap() {
            lengths.push(chunk.len());
            joined.extend_from_slice(chunk);
        }
        assert_eq!(lengths, expect);
        assert!(joined == data);
        assert!(stream.into_buffer().len() <= 2 * c.max_size());
    }

    #[test]
    fn seed_changes_boundaries() {
        let p = ChunkerParams::from_average(16 * 1024).unwrap();
        let data = pseudo_random(1024 * 1024, 9);
        let a = Chunker::new(p, 1).unwrap().chunk_lengths(&data);
        let b = Chunker::new(p, 2).unwrap().chunk_lengths(&data);
        assert_ne!(a, b);
    }

    #[test]
    fn invalid_params_are_rejected() {
        let bad = ChunkerParams {
            min_size: 10,
            avg_size: 20,
            max_size: 30,
        };
        assert!(Chunker::new(bad, 1).is_err());
        let odd = ChunkerParams {
            min_size: 65537,
            avg_size: 131072,
            max_size: 1048576,
        };
        assert!(odd.validate().is_err());
    }
}
