//! Reads a pipe ahead of the chunker, on a thread of its own. The chunker
//! works in bursts (hash a few MiB, then read again); read inline, a pipe's
//! 64 KiB fill in a fraction of a millisecond and the producer (`pg_dump`,
//! and the database behind it) sits blocked for the rest of each burst. With
//! a reader that never stops, producer and pipeline run side by side.
//! Memory: at most [`BLOCKS`] blocks of [`BLOCK_LEN`] are waiting.

use crossbeam_channel::{bounded, Receiver, Sender};
use std::io::{self, Read};

const BLOCK_LEN: usize = 1 << 20;
const BLOCKS: usize = 8;

pub struct ReadAhead {
    blocks: Receiver<io::Result<Vec<u8>>>,
    /// Spent blocks go back to the reader thread (no zeroing, no page faults).
    spent: Sender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ReadAhead {
    /// Starts reading `source` now; the thread ends at its end, at an error,
    /// or once this `ReadAhead` is dropped.
    pub fn spawn<R: Read + Send + 'static>(source: R) -> ReadAhead {
        let (block_tx, blocks) = bounded(BLOCKS);
        let (spent, spent_rx) = bounded(BLOCKS + 1);
        std::thread::spawn(move || read_blocks(source, &block_tx, &spent_rx));
        ReadAhead {
            blocks,
            spent,
            current: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

/// Fills whole blocks (fewer hand-overs than one per `read`), sends each on.
fn read_blocks(
    mut source: impl Read,
    blocks: &Sender<io::Result<Vec<u8>>>,
    spent: &Receiver<Vec<u8>>,
) {
    loop {
        let mut block = spent.try_recv().unwrap_or_else(|_| vec![0; BLOCK_LEN]);
        block.resize(BLOCK_LEN, 0);
        let mut len = 0;
        let mut end = false;
        while len < BLOCK_LEN {
            match source.read(&mut block[len..]) {
                Ok(0) => {
                    end = true;
                    break;
                }
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // what came before the error is still the stream's
                    block.truncate(len);
                    if len > 0 && blocks.send(Ok(block)).is_err() {
                        return;
                    }
                    let _ = blocks.send(Err(e));
                    return;
                }
            }
        }
        block.truncate(len);
        if (len > 0 && blocks.send(Ok(block)).is_err()) || end {
            return; // the end, or nobody is reading any more
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.blocks.recv() {
                Ok(block) => {
                    let spent = std::mem::replace(&mut self.current, block?);
                    let _ = self.spent.try_send(spent);
                    self.pos = 0;
                }
                // the reader thread ended: everything was handed over
                Err(_) => self.done = true,
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its bytes in uneven pieces, then maybe an error.
    struct Dribble {
        data: Vec<u8>,
        pos: usize,
        fail_at_end: bool,
    }

    impl Read for Dribble {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() && self.fail_at_end {
                return Err(io::Error::other("producer broke"));
            }
            let n = out.len().min(self.data.len() - self.pos).min(70_001);
            out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    #[test]
    fn passes_every_byte_in_order() {
        for len in [
            0,
            1,
            BLOCK_LEN - 1,
            BLOCK_LEN,
            3 * BLOCK_LEN + 12_345,
            20 * BLOCK_LEN,
        ] {
            let data = pattern(len);
            let mut out = Vec::new();
            let source = Dribble {
                data: data.clone(),
                pos: 0,
                fail_at_end: false,
            };
            ReadAhead::spawn(source).read_to_end(&mut out).unwrap();
            assert!(out == data, "{len} bytes came back different");
        }
    }

    #[test]
    fn a_read_error_reaches_the_reader_after_the_data_before_it() {
        let data = pattern(2 * BLOCK_LEN + 5);
        let source = Dribble {
            data: data.clone(),
            pos: 0,
            fail_at_end: true,
        };
        let mut ahead = ReadAhead::spawn(source);
        let mut got = vec![0; 2 * BLOCK_LEN];
        ahead.read_exact(&mut got).unwrap();
        assert!(got == data[..2 * BLOCK_LEN]);
        let mut rest = Vec::new();
        let err = ahead.read_to_end(&mut rest).unwrap_err();
        assert_eq!(err.to_string(), "producer broke");
        assert!(rest == data[2 * BLOCK_LEN..], "the bytes before the error");
    }
}
