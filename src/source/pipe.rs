//! Reading a stream from a pipe without making its producer wait.
//!
//! A producer such as `pg_dump` is usually the slowest stage, and the
//! database behind it stalls whenever the pipe is full. Three things keep it
//! writing: a 1 MiB pipe instead of 64 KiB; a thread that does nothing but
//! read, a few MiB ahead of the chunker (which otherwise stops reading for
//! several milliseconds while it cuts and hashes a window, long enough for
//! the producer to fill even a large pipe); and reads that wait to be worth
//! it (see [`Coalescing`]).

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Duration;

/// The largest size an unprivileged process may set by default
/// (/proc/sys/fs/pipe-max-size).
const PIPE_SIZE: i32 = 1 << 20;

/// Enlarges `fd` if it is a pipe; anything else (a file, a terminal) and
/// any refusal are left alone: the size only affects speed.
pub fn enlarge(fd: impl AsFd) {
    use nix::fcntl::{fcntl, FcntlArg};
    let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
}

/// Bytes read ahead: `BLOCKS` blocks of up to `BLOCK` bytes each.
const BLOCK: usize = 1 << 20;
const BLOCKS: usize = 8;
/// The reader hands a block on once it holds this much, so the consumer is
/// not kept waiting for a slow producer to fill a whole MiB.
const HAND_ON_AT: usize = BLOCK / 4;

/// A `Read` fed by a thread that reads `source` up to `BLOCKS × BLOCK`
/// bytes ahead. Blocks go back to the thread once consumed, so memory is
/// fixed. Dropping it stops the thread at its next block (or at the end of
/// `source`).
pub struct ReadAhead {
    filled: Receiver<io::Result<Vec<u8>>>,
    emptied: SyncSender<Vec<u8>>,
    block: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl ReadAhead {
    /// Reads `source` ahead; a pipe is read as [`Coalescing`] describes.
    pub fn spawn<R: Read + AsFd + Send + 'static>(source: R) -> io::Result<ReadAhead> {
        let wait = wait_after_short_read(&source);
        ReadAhead::start(source, wait)
    }

    fn start<R: Read + Send + 'static>(source: R, wait: Duration) -> io::Result<ReadAhead> {
        let (filled_tx, filled) = sync_channel(BLOCKS);
        let (emptied, emptied_rx) = sync_channel(BLOCKS);
        for _ in 0..BLOCKS {
            emptied.send(Vec::new()).expect("the channel has room");
        }
        std::thread::Builder::new()
            .name("stream-reader".into())
            .spawn(move || read_blocks(Coalescing::new(source, wait), emptied_rx, filled_tx))?;
        Ok(ReadAhead {
            filled,
            emptied,
            block: Vec::new(),
            pos: 0,
            ended: false,
        })
    }
}

/// The thread's loop: fill each empty block and send it on. An empty block
/// is the end of the stream; an error ends it too.
fn read_blocks(
    mut source: impl Read,
    emptied: Receiver<Vec<u8>>,
    filled: SyncSender<io::Result<Vec<u8>>>,
) {
    while let Ok(mut block) = emptied.recv() {
        block.resize(BLOCK, 0);
        let mut len = 0;
        let outcome = loop {
            match source.read(&mut block[len..]) {
                Ok(0) => break Ok(true),
                Ok(n) => {
                    len += n;
                    if len >= HAND_ON_AT {
                        break Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        block.truncate(len);
        let (end, error) = match outcome {
            Ok(end) => (end, None),
            Err(e) => (true, Some(e)),
        };
        // the bytes read before an end or an error go first
        let mut sent = Ok(());
        if len > 0 {
            sent = filled.send(Ok(block));
        }
        if end && sent.is_ok() {
            sent = filled.send(error.map_or(Ok(Vec::new()), Err));
        }
        if end || sent.is_err() {
            return;
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.block.len() {
            if self.ended {
                return Ok(0);
            }
            let used = std::mem::take(&mut self.block);
            self.pos = 0;
            if used.capacity() > 0 {
                // the thread may have ended already; the block is then unneeded
                let _ = self.emptied.send(used);
            }
            match self.filled.recv() {
                Ok(Ok(block)) => {
                    self.ended = block.is_empty();
                    self.block = block;
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Err(_) => {
                    self.ended = true;
                    return Err(io::Error::other("the stream's reader thread stopped"));
                }
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads a pipe in large pieces. A producer such as `pg_dump` writes 4 KiB
/// at a time, and a reader that keeps up wakes for every write: ~70k reads
/// for a 500 MB dump. After a short read this waits briefly instead, so the
/// next read finds the pipe well filled (~6k reads for that dump); a reader
/// that falls behind gets full reads and never waits.
struct Coalescing<R> {
    inner: R,
    wait: Duration,
    last_was_short: bool,
}

/// A read shorter than this (and than asked for) means the reader is ahead.
const SHORT_READ: usize = 64 * 1024;

/// The producer speed the wait after a short read allows for.
const FAST_PRODUCER_BYTES_PER_SEC: u64 = 1_000_000_000;

/// How long a short read of `source` is followed by a wait: the time a fast
/// producer takes to fill half of the pipe, ~0.5 ms for the 1 MiB pipe
/// [`enlarge`] asks for. It must follow the pipe's real size: the kernel
/// keeps a pipe at 64 KiB (or one page) when a user's pipes already hold
/// their share of memory, and a 0.5 ms wait on a 64 KiB pipe stalls
/// `pg_dump` so often that its dump takes 2.6 times as long (measured).
/// Anything but a pipe is never waited for.
fn wait_after_short_read(source: &impl AsFd) -> Duration {
    use nix::fcntl::{fcntl, FcntlArg};
    match fcntl(source, FcntlArg::F_GETPIPE_SZ) {
        Ok(capacity) if capacity > 0 => {
            let half = capacity as u64 / 2;
            Duration::from_nanos(half * 1_000_000_000 / FAST_PRODUCER_BYTES_PER_SEC)
        }
        _ => Duration::ZERO,
    }
}

impl<R> Coalescing<R> {
    fn new(inner: R, wait: Duration) -> Self {
        Coalescing {
            inner,
            wait,
            last_was_short: false,
        }
    }
}

impl<R: Read> Read for Coalescing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.last_was_short && !self.wait.is_zero() {
            std::thread::sleep(self.wait);
        }
        let n = self.inner.read(buf)?;
        self.last_was_short = n > 0 && n < buf.len().min(SHORT_READ);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_grows_and_a_file_is_left_alone() {
        use nix::fcntl::{fcntl, FcntlArg};
        let (read_end, _write_end) = nix::unistd::pipe().unwrap();
        enlarge(&read_end);
        assert_eq!(fcntl(&read_end, FcntlArg::F_GETPIPE_SZ).unwrap(), PIPE_SIZE);
        let file = tempfile::tempfile().unwrap();
        enlarge(&file); // no error, no effect
    }

    #[test]
    fn the_wait_after_a_short_read_follows_the_pipe_size() {
        use nix::fcntl::{fcntl, FcntlArg};
        let (large, _w1) = nix::unistd::pipe().unwrap();
        enlarge(&large);
        assert_eq!(wait_after_short_read(&large), Duration::from_nanos(524_288));
        // what the kernel leaves a user whose pipes hold their share
        let (small, _w2) = nix::unistd::pipe().unwrap();
        fcntl(&small, FcntlArg::F_SETPIPE_SZ(64 * 1024)).unwrap();
        assert_eq!(wait_after_short_read(&small), Duration::from_nanos(32_768));
        let file = tempfile::tempfile().unwrap();
        assert_eq!(wait_after_short_read(&file), Duration::ZERO);
    }

    #[test]
    fn read_ahead_through_a_pipe_yields_every_byte_in_order() {
        // more than all blocks together, written in uneven pieces by a
        // producer that pauses now and then, read back in other pieces
        let data = crate::chunker::tests::pseudo_random(BLOCKS * BLOCK * 2 + 12_345, 5);
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let expected = data.clone();
        let producer = std::thread::spawn(move || {
            use std::io::Write;
            let mut w = std::fs::File::from(write_end);
            for (i, piece) in data.chunks(4096 + 17).enumerate() {
                w.write_all(piece).unwrap();
                if i % 500 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        let mut reader = ReadAhead::spawn(std::fs::File::from(read_end)).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 300_001];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        producer.join().unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected);
        assert_eq!(reader.read(&mut buf).unwrap(), 0, "the end stays the end");
    }

    #[test]
    fn read_ahead_passes_on_a_read_error_after_the_bytes_before_it() {
        struct FailsAfter(usize);
        impl Read for FailsAfter {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::BrokenPipe, "producer gone"));
                }
                let n = buf.len().min(self.0).min(1000);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut reader = ReadAhead::start(FailsAfter(5000), Duration::ZERO).unwrap();
        let mut got = Vec::new();
        let err = reader.read_to_end(&mut got).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(got, vec![7u8; 5000]);
    }

    #[test]
    fn an_empty_stream_ends_at_once() {
        let mut reader = ReadAhead::start(io::empty(), Duration::ZERO).unwrap();
        assert_eq!(reader.read(&mut [0u8; 10]).unwrap(), 0);
    }
}
