//! Backup sources: the file system ([`fs`]) with its [`exclude`] rules and
//! path lists ([`list_file`]), and [`command`]s whose stdout is a stream. Stdin needs no module: it is any
//! `Read` handed to the archiver, through a larger [`pipe`] when it is one.

pub mod command;
pub mod exclude;
pub mod fs;
pub mod list_file;
pub mod pipe;
pub mod stat;
