//! Backup sources: the file system ([`fs`]) with its [`exclude`] rules. A
//! stream (stdin, a command's stdout) needs no module of its own: it is any
//! `Read` handed to the archiver.

pub mod exclude;
pub mod fs;
