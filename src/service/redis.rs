//! Redis: the server's RDB snapshot, streamed by `redis-cli --rdb -` (the
//! replication protocol; nothing is written on the server's disk) as
//! `/redis/dump.rdb`. A restore writes the RDB file a new server loads at
//! start (its `dir` and `dbfilename`).
//!
//! `connection` is a `redis://[user:password@]host:port[/db]` URI, or the
//! path of a unix socket; a password is better given as `REDISCLI_AUTH`.

use super::{command_stream, Service, ServiceRestoreOptions, ServiceRestoreReport, ServiceStreams};
use crate::backup::StreamSource;
use anyhow::{anyhow, Context, Result};

const RDB: &str = "dump.rdb";

pub(super) fn dump_streams(service: &Service) -> Vec<StreamSource> {
    let mut args = connection_args(service.connection.as_deref());
    args.extend(["--rdb".to_string(), "-".to_string()]);
    vec![command_stream(
        service,
        RDB,
        service.tools.argv("redis-cli", &args),
    )]
}

fn connection_args(connection: Option<&str>) -> Vec<String> {
    match connection.map(str::trim) {
        None | Some("") => Vec::new(),
        Some(c) if c.starts_with('/') => vec!["-s".into(), c.into()],
        Some(c) if c.starts_with("unix://") => vec!["-s".into(), c["unix://".len()..].into()],
        Some(uri) => vec!["-u".into(), uri.into()],
    }
}

pub(super) fn restore(
    service: &Service,
    streams: &ServiceStreams,
    opts: &ServiceRestoreOptions,
) -> Result<ServiceRestoreReport> {
    if opts.database.is_some() || opts.target_database.is_some() || !opts.tables.is_empty() {
        return Err(anyhow!(
            "a redis source restores its RDB file: give --target FILE only"
        ));
    }
    let target = opts.target.as_deref().ok_or_else(|| {
        anyhow!("a redis restore needs --target FILE: the RDB file a new server loads")
    })?;
    let rdb = streams
        .get(RDB)
        .ok_or_else(|| anyhow!("the snapshot holds no /redis/{RDB}"))?;
    let replaced = super::write_file_atomically(target, opts.replace, |temp| {
        let mut file = std::fs::OpenOptions::new().write(true).open(temp)?;
        streams.write(rdb, &mut file)?;
        file.sync_all().context("writing the RDB file")
    })?;
    Ok(ServiceRestoreReport {
        source_type: service.kind,
        from: streams.path_of(rdb),
        into: target.display().to_string(),
        replaced,
        globals: false,
        bytes: rdb.size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_and_uris_are_told_apart() {
        assert_eq!(
            connection_args(Some("/run/redis.sock")),
            ["-s", "/run/redis.sock"]
        );
        assert_eq!(connection_args(Some("unix:///r.sock")), ["-s", "/r.sock"]);
        assert_eq!(
            connection_args(Some("redis://h:1/2")),
            ["-u", "redis://h:1/2"]
        );
        assert!(connection_args(None).is_empty());
    }
}
