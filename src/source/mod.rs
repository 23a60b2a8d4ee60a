//! Backup sources: the file system ([`fs`]) with its [`exclude`] rules, and
//! [`command`]s whose stdout is a stream. Streams (stdin, a command's
//! stdout) are read through [`readahead`].

pub mod command;
pub mod exclude;
pub mod fs;
pub mod readahead;
