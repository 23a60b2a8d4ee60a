//! Larger pipes for streams. A producer such as `pg_dump` writes to its pipe
//! while the chunker hashes a few MiB at a time; a 64 KiB pipe fills in a
//! fraction of a millisecond and then the producer (and the database behind
//! it) waits for the rest of each burst, and for cairn's start-up (the key
//! derivation takes ~0.1 s). A 1 MiB pipe lets it keep writing meanwhile.

use std::os::fd::AsFd;

/// The largest size an unprivileged process may set by default
/// (/proc/sys/fs/pipe-max-size).
const PIPE_SIZE: i32 = 1 << 20;

/// Enlarges `fd` if it is a pipe; anything else (a file, a terminal) and
/// any refusal are left alone: the size only affects speed.
pub fn enlarge(fd: impl AsFd) {
    use nix::fcntl::{fcntl, FcntlArg};
    let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
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
}
