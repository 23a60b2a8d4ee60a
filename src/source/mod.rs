//! Backup sources: the file system ([`fs`]) with its [`exclude`] rules, and
//! [`command`]s whose stdout is a stream. Stdin needs no module: it is any
//! `Read` handed to the archiver.

pub mod command;
pub mod exclude;
pub mod fs;
