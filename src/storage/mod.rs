//! Storage output: an OpenDAL operator chosen from a repository URL. All
//! repository I/O goes through [`Storage`], so a new backend is configuration.

pub mod location;
mod rate;
mod swift_auth;

use anyhow::{anyhow, Context, Result};
use location::{Location, Remote};
use opendal::layers::{ConcurrentLimitLayer, LoggingLayer, RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};
use rate::RateLimit;
use std::future::IntoFuture;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// A repository location and the operator that reaches it. Calls block the
/// calling thread; they must not be made from inside a tokio worker. Clones
/// share the operator and the I/O runtime (the lock refresher uses one).
#[derive(Clone)]
pub struct Storage {
    op: Operator,
    runtime: Arc<tokio::runtime::Runtime>,
    location: String,
    local_root: Option<PathBuf>,
    shared: Arc<Shared>,
}

/// What clones of one [`Storage`] share.
struct Shared {
    requests: RequestCounts,
    upload_limit: Option<RateLimit>,
    download_limit: Option<RateLimit>,
    /// Credential values, scrubbed from every error message.
    secrets: Vec<String>,
    /// Whether the service refuses to overwrite with `If-None-Match: *`.
    conditional_create: bool,
}

/// How to reach storage beyond its URL (global CLI options).
#[derive(Debug, Clone, Default)]
pub struct StorageOptions {
    /// `-o KEY=VALUE`.
    pub options: Vec<(String, String)>,
    /// Bytes per second, averaged (`--limit-upload`, `--limit-download`).
    pub limit_upload: Option<u64>,
    pub limit_download: Option<u64>,
}

/// Requests made, by kind (logical requests: a multipart upload or a
/// retried request counts once).
#[derive(Default)]
pub struct RequestCounts {
    pub put: AtomicU64,
    pub get: AtomicU64,
    pub list: AtomicU64,
    pub head: AtomicU64,
    pub delete: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestTally {
    pub put: u64,
    pub get: u64,
    pub list: u64,
    pub head: u64,
    pub delete: u64,
}

/// One listed object.
pub struct ListedObject {
    /// Path relative to the listed directory's parent, e.g. `data/ab/ab12…`.
    pub path: String,
    pub size: u64,
    /// The storage's own modification time (Unix ns), where it reports one.
    pub modified_ns: Option<i64>,
}

fn timestamp_ns(meta: &opendal::Metadata) -> Option<i64> {
    let ns = jiff::Timestamp::from(meta.last_modified()?).as_nanosecond();
    i64::try_from(ns).ok()
}

/// Attempts of one request before giving up, and the longest pause between
/// them: a server that is away for ~15 s is waited out.
const RETRIES: usize = 4;
const MAX_RETRY_DELAY: Duration = Duration::from_secs(8);
/// A request that makes no progress for this long is abandoned (and
/// retried), unless CAIRN_IO_TIMEOUT says otherwise (see `io_timeout`).
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// CAIRN_IO_TIMEOUT (`20s`, `5m`): a link too slow for 60 s without
/// progress, or a stalled store to be given up on sooner.
fn io_timeout() -> Result<Duration> {
    let Ok(text) = std::env::var("CAIRN_IO_TIMEOUT") else {
        return Ok(IO_TIMEOUT);
    };
    let timeout = crate::duration::parse(&text).context("CAIRN_IO_TIMEOUT")?;
    if timeout.is_zero() {
        return Err(anyhow!("CAIRN_IO_TIMEOUT must be longer than 0s, e.g. 30s"));
    }
    Ok(timeout)
}
/// Requests in flight at once, whatever the callers do.
const MAX_CONCURRENT_REQUESTS: usize = 16;

/// The most a ranged read reserves before its bytes arrive: a whole pack
/// read at once (`pack::MAX_READ`) fits.
const RESERVE_AHEAD_MAX: u64 = 32 << 20;

impl Storage {
    /// `url` is a local path, `memory://`, `s3://…`, `swift://…` or
    /// `opendal:SCHEME` (see [`location`]).
    pub fn open(url: &str) -> Result<Storage> {
        Storage::open_with(url, &StorageOptions::default())
    }

    pub fn open_with(url: &str, opts: &StorageOptions) -> Result<Storage> {
        // First install wins; later calls are no-ops.
        opendal_http_transport_reqwest::install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the I/O runtime")?;
        let env = |name: &str| std::env::var(name).ok();
        let mut secrets = Vec::new();
        let (op, local_root) = match location::resolve(url, &opts.options, &env)? {
            Location::Memory => (Operator::new(opendal::services::Memory::default())?, None),
            Location::Local(path) => {
                let root = std::path::absolute(&path)
                    .with_context(|| format!("repository path {url:?}"))?;
                let root_str = root
                    .to_str()
                    .ok_or_else(|| anyhow!("repository path {url:?} is not UTF-8"))?;
                // Objects are written to a temporary file and renamed into
                // place, so a killed process never leaves a half-written
                // object under its final name.
                let builder = opendal::services::Fs::default()
                    .root(root_str)
                    .atomic_write_dir(&format!("{root_str}/.tmp"));
                (Operator::new(builder)?, Some(root))
            }
            Location::Remote(remote) => {
                secrets = remote.secrets();
                let op = runtime.block_on(remote_operator(remote, &mut secrets))?;
                (op, None)
            }
        };
        // bounds both a request that gets no answer and a transfer that stops
        let stall_timeout = io_timeout()?;
        let conditional_create = op.info().capability().write_with_if_not_exists;
        let op = op
            .layer(LoggingLayer::default())
            .layer(
                TimeoutLayer::new()
                    .with_timeout(stall_timeout)
                    .with_io_timeout(stall_timeout),
            )
            .layer(ConcurrentLimitLayer::new(MAX_CONCURRENT_REQUESTS))
            .layer(
                RetryLayer::new()
                    .with_jitter()
                    .with_max_times(RETRIES)
                    .with_max_delay(MAX_RETRY_DELAY)
                    .with_notify(announce_retry),
            );
        Ok(Storage {
            op,
            runtime: Arc::new(runtime),
            location: url.to_string(),
            local_root,
            shared: Arc::new(Shared {
                requests: RequestCounts::default(),
                upload_limit: opts.limit_upload.map(RateLimit::new),
                download_limit: opts.limit_download.map(RateLimit::new),
                secrets,
                conditional_create,
            }),
        })
    }

    /// Requests made so far through this storage and its clones.
    pub fn requests(&self) -> RequestTally {
        let r = &self.shared.requests;
        RequestTally {
            put: r.put.load(Relaxed),
            get: r.get.load(Relaxed),
            list: r.list.load(Relaxed),
            head: r.head.load(Relaxed),
            delete: r.delete.load(Relaxed),
        }
    }

    /// For a remote location without a repository: tells a missing bucket
    /// (or container) apart from an empty one.
    pub fn probe_container(&self) -> Result<()> {
        if !self.is_remote() {
            return Ok(());
        }
        self.shared.requests.list.fetch_add(1, Relaxed);
        match self.runtime.block_on(self.op.list("keys/")) {
            Err(e)
                if e.kind() == ErrorKind::NotFound
                    || service_error(e.message()).is_some_and(|(code, _)| {
                        code == "NoSuchBucket" || code == "NoSuchContainer"
                    }) =>
            {
                Err(anyhow!(
                    "{}: the bucket (or Swift container) does not exist; create it first \
                 (e.g. `aws s3 mb`, `swift post CONTAINER`), then run `cairn init`",
                    self.location
                ))
            }
            Err(e) => Err(self.describe(e, "listing", "keys/")),
            Ok(_) => Ok(()),
        }
    }

    fn describe(&self, e: opendal::Error, doing: &str, path: &str) -> anyhow::Error {
        describe(e, doing, path, &self.shared.secrets)
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// For local repositories, the directory (init creates it).
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    /// Whether each request crosses a network (and so waits a round trip):
    /// everything but a local directory and `memory://`.
    pub fn is_remote(&self) -> bool {
        self.local_root.is_none() && self.location != "memory://"
    }

    /// Reads a whole object of at most `max_size` bytes (one request). A
    /// larger one is refused as soon as that many bytes have arrived: objects
    /// come from storage others can write, and none may decide how much
    /// memory a command takes (the limits per kind: `repo::layout::max_size`).
    pub fn read(&self, path: &str, max_size: u64) -> Result<Vec<u8>> {
        let out = self.runtime.block_on(self.read_whole(path, max_size));
        self.finish_read(path, max_size, out)
    }

    /// [`Self::read`] of every path, [`MAX_CONCURRENT_REQUESTS`] at a time,
    /// each result in its path's place. Many small objects (index files,
    /// snapshots, keys) from a distant store then wait about one round trip,
    /// not one each; callers hand over as many paths as they can hold.
    pub fn read_each(&self, paths: &[String], max_size: u64) -> Vec<Result<Vec<u8>>> {
        use futures_util::StreamExt;
        let reads = futures_util::stream::iter(paths)
            .map(|path| self.read_whole(path, max_size))
            .buffered(MAX_CONCURRENT_REQUESTS);
        let read: Vec<_> = self.runtime.block_on(reads.collect());
        paths
            .iter()
            .zip(read)
            .map(|(path, out)| self.finish_read(path, max_size, out))
            .collect()
    }

    /// One whole object; `None` once it exceeds `max_size`.
    async fn read_whole(
        &self,
        path: &str,
        max_size: u64,
    ) -> std::result::Result<Option<Vec<u8>>, opendal::Error> {
        use futures_util::TryStreamExt;
        self.shared.requests.get.fetch_add(1, Relaxed);
        if let Some(root) = &self.local_root {
            let file = root.join(path);
            let local = tokio::task::spawn_blocking(move || read_local_whole(&file, max_size));
            // on any failure the read goes through OpenDAL, which words the error
            if let Ok(Ok(out)) = local.await {
                return Ok(out);
            }
        }
        let mut stream = self.op.reader(path).await?.into_stream(..).await?;
        let mut out = Vec::new();
        while let Some(buf) = stream.try_next().await? {
            if (out.len() + buf.len()) as u64 > max_size {
                return Ok(None);
            }
            buf.into_iter().for_each(|b| out.extend_from_slice(&b));
        }
        Ok(Some(out))
    }

    fn finish_read(
        &self,
        path: &str,
        max_size: u64,
        out: std::result::Result<Option<Vec<u8>>, opendal::Error>,
    ) -> Result<Vec<u8>> {
        let out = out
            .map_err(|e| self.describe(e, "reading", path))?
            .ok_or_else(|| StorageError::TooLarge {
                path: path.to_string(),
                max_size,
            })?;
        if let Some(limit) = &self.shared.download_limit {
            limit.pace(out.len() as u64);
        }
        Ok(out)
    }

    pub fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.read_range_into(path, range, &mut bytes)?;
        Ok(bytes)
    }

    /// [`Self::read_range`] into `bytes`, which it replaces: a reader of
    /// many ranges keeps one buffer, whose memory is already mapped.
    pub fn read_range_into(
        &self,
        path: &str,
        range: Range<u64>,
        bytes: &mut Vec<u8>,
    ) -> Result<()> {
        let want = range.end - range.start;
        if let Some(limit) = &self.shared.download_limit {
            limit.pace(want);
        }
        self.shared.requests.get.fetch_add(1, Relaxed);
        if self.read_local(path, &range, bytes) {
            return Ok(());
        }
        // The body is copied into `bytes` as it arrives: each network chunk
        // is freed at once, so the same few pages serve the whole read. A
        // read collected whole first held a second copy of every pack,
        // which the allocator handed back to the kernel after each one:
        // page faults and copies were a tenth of a remote restore's CPU.
        bytes.clear();
        // (what a hostile index claims is not reserved up front)
        bytes.reserve(want.min(RESERVE_AHEAD_MAX) as usize);
        let got = self
            .runtime
            .block_on(async {
                let reader = self.op.reader(path).await?;
                reader.read_into(bytes, range.clone()).await
            })
            .map_err(|e| self.describe(e, "reading", path))?;
        if got as u64 != want {
            return Err(anyhow!(
                "reading {path}: got {got} bytes of range {}..{}: the object is truncated",
                range.start,
                range.end
            ));
        }
        Ok(())
    }

    /// Reads a range of a local repository's object straight into `bytes`
    /// with one `pread`. OpenDAL's reader would fill a new zeroed buffer on
    /// a blocking thread and hand it over to be copied: on a restore, page
    /// faults and copies cost a tenth of all CPU. Whether it worked; on
    /// any failure the read goes through OpenDAL, which words the error.
    fn read_local(&self, path: &str, range: &Range<u64>, bytes: &mut Vec<u8>) -> bool {
        use std::os::unix::fs::FileExt;
        let Some(root) = &self.local_root else {
            return false;
        };
        let Ok(len) = usize::try_from(range.end - range.start) else {
            return false;
        };
        // (only what is beyond the buffer's length is zeroed)
        bytes.truncate(len);
        bytes.resize(len, 0);
        std::fs::File::open(root.join(path))
            .and_then(|f| f.read_exact_at(bytes, range.start))
            .is_ok()
    }

    /// Writes an object that must not exist yet. Every name cairn writes is
    /// new (a hash of the content, or random), so where the service supports
    /// `If-None-Match: *` it is sent: a name taken by someone else is then an
    /// error instead of a silent overwrite. An object that is already there
    /// with the same bytes (a retried upload that had landed) is success.
    /// Services without conditional create (the local disk renames
    /// atomically, Swift has no such header) overwrite; with content-derived
    /// names that rewrites identical bytes.
    pub fn write(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        if let Some(limit) = &self.shared.upload_limit {
            limit.pace(bytes.len() as u64);
        }
        self.shared.requests.put.fetch_add(1, Relaxed);
        let len = bytes.len() as u64;
        let result = self.runtime.block_on(
            self.op
                .write_with(path, bytes)
                .if_not_exists(self.shared.conditional_create)
                .into_future(),
        );
        match result {
            Ok(_) => self.sync_parent_dir(path),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => match self.size(path) {
                Ok(size) if size == len => Ok(()),
                _ => Err(anyhow!(
                    "writing {path}: another object already has this name; \
                     refusing to overwrite it (run `cairn check`)"
                )),
            },
            Err(e) => Err(self.describe(e, "writing", path)),
        }
    }

    /// On local disk the object's file was synced before it was renamed into
    /// place; syncing its directory makes the rename itself survive a power
    /// cut, before anything that depends on the object is written.
    fn sync_parent_dir(&self, path: &str) -> Result<()> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let full = root.join(path);
        let dir = full.parent().unwrap_or(root);
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {} after writing {path}", dir.display()))
    }

    pub fn exists(&self, path: &str) -> Result<bool> {
        self.shared.requests.head.fetch_add(1, Relaxed);
        self.runtime
            .block_on(self.op.exists(path))
            .map_err(|e| self.describe(e, "checking", path))
    }

    pub fn size(&self, path: &str) -> Result<u64> {
        Ok(self.stat(path)?.content_length())
    }

    fn stat(&self, path: &str) -> Result<opendal::Metadata> {
        self.shared.requests.head.fetch_add(1, Relaxed);
        self.runtime
            .block_on(self.op.stat(path))
            .map_err(|e| self.describe(e, "checking", path))
    }

    /// The storage's own modification time of an object (Unix ns): the one
    /// clock every host sharing the repository agrees on. `None` where the
    /// storage keeps none (`memory://`): there prune judges no age, so it
    /// condemns but never deletes.
    pub fn modified_ns(&self, path: &str) -> Result<Option<i64>> {
        Ok(timestamp_ns(&self.stat(path)?))
    }

    pub fn delete(&self, path: &str) -> Result<()> {
        self.shared.requests.delete.fetch_add(1, Relaxed);
        self.runtime
            .block_on(self.op.delete(path))
            .map_err(|e| match e.kind() {
                ErrorKind::PermissionDenied => anyhow::Error::new(StorageError::DeleteDenied {
                    path: path.to_string(),
                }),
                _ => self.describe(e, "deleting", path),
            })
    }

    /// Every object below `dir` (e.g. `"snapshots/"`), recursively.
    pub fn list(&self, dir: &str) -> Result<Vec<ListedObject>> {
        self.shared.requests.list.fetch_add(1, Relaxed);
        let entries = match self
            .runtime
            .block_on(self.op.list_with(dir).recursive(true).into_future())
        {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.describe(e, "listing", dir)),
        };
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file() && !e.path().ends_with('/'))
            .map(|e| ListedObject {
                path: e.path().to_string(),
                size: e.metadata().content_length(),
                modified_ns: timestamp_ns(e.metadata()),
            })
            .collect())
    }
}

/// A storage failure that names the object and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{doing} {path}: the object does not exist in the repository")]
    NotFound { doing: String, path: String },
    #[error(
        "{doing} {path}: permission denied by the storage (check the credentials and their rights)"
    )]
    PermissionDenied { doing: String, path: String },
    /// Append-only credentials (a backup host's) meet a maintenance command.
    #[error(
        "deleting {path}: permission denied by the storage. These credentials may not delete \
         (an append-only backup host's?): forget, prune, repair and unlock need credentials \
         with delete rights"
    )]
    DeleteDenied { path: String },
    /// Larger than any object of its kind can be: its bytes are not read.
    #[error(
        "reading {path}: larger than {max_size} bytes, more than any object of its kind can \
         be: the repository is damaged or was written by something else (`cairn check` \
         lists what is wrong)"
    )]
    TooLarge { path: String, max_size: u64 },
    #[error("{doing} {path}: {message}")]
    Other {
        doing: String,
        path: String,
        message: String,
    },
}

/// A whole object of a local repository, `None` once it exceeds
/// `max_size`. OpenDAL's local reader takes a pooled 2 MiB buffer for a
/// read of unknown length, zeroes it, and keeps up to 16 such buffers for
/// the life of the process: reading the config and a key file at start
/// left 4 MiB resident through a whole backup, and 16 index files at once
/// 32 MiB. Read here, an object takes its own size.
fn read_local_whole(path: &std::path::Path, max_size: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > max_size {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(len as usize);
    // (one byte more than allowed tells a file that grew since)
    file.take(max_size + 1).read_to_end(&mut out)?;
    Ok((out.len() as u64 <= max_size).then_some(out))
}

fn describe(e: opendal::Error, doing: &str, path: &str, secrets: &[String]) -> anyhow::Error {
    let (doing, path) = (doing.to_string(), path.to_string());
    anyhow::Error::new(match e.kind() {
        ErrorKind::NotFound => StorageError::NotFound { doing, path },
        ErrorKind::PermissionDenied => StorageError::PermissionDenied { doing, path },
        _ => StorageError::Other {
            doing,
            path,
            message: redact(&explain(&e), secrets),
        },
    })
}

/// A short account of an OpenDAL error: its kind, whether it was retried,
/// and the service's own message without the XML or JSON around it.
fn explain(e: &opendal::Error) -> String {
    let kind = match e.kind() {
        ErrorKind::ConfigInvalid => "the storage configuration is invalid",
        ErrorKind::RateLimited => "the storage is rate limiting us",
        ErrorKind::Unexpected if e.is_temporary() => "the storage could not be reached",
        _ => "storage error",
    };
    let detail = service_error(e.message())
        .map(|(code, text)| format!("{code}: {text}"))
        .unwrap_or_else(|| {
            e.message()
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect()
        });
    // A retried error that stayed: the server is away or unreachable.
    if e.is_persistent() && e.kind() == ErrorKind::Unexpected {
        return format!(
            "{kind} (gave up after {RETRIES} retries): {detail}; check the endpoint and \
             that the server is up, then run the command again (what was stored stays)"
        );
    }
    format!("{kind}: {detail}")
}

/// The service's error code and message, from an S3 XML body or OpenDAL's
/// rendering of it (`S3Error { code: "…", message: "…" }`).
fn service_error(message: &str) -> Option<(&str, &str)> {
    let code = tag_text(message, "Code").or_else(|| quoted_field(message, "code"))?;
    let text = tag_text(message, "Message")
        .or_else(|| quoted_field(message, "message"))
        .unwrap_or("");
    Some((code, text))
}

fn quoted_field<'a>(body: &'a str, field: &str) -> Option<&'a str> {
    let start = body.find(&format!("{field}: \""))? + field.len() + 3;
    let end = body[start..].find('"')? + start;
    Some(&body[start..end])
}

/// The text of the first `<tag>…</tag>` in an S3-style XML error body.
fn tag_text<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].trim())
}

fn redact(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "***"))
}

fn announce_retry(event: opendal::layers::RetryEvent<'_>) {
    eprintln!(
        "note: storage {} failed ({}), retry {} of {RETRIES} in {:.1} s",
        event.op,
        event.err.kind(),
        event.attempt,
        event.retry_after.as_secs_f64()
    );
}

/// The operator of a remote location; Swift v1 credentials are traded for a
/// storage URL and token first.
async fn remote_operator(mut remote: Remote, secrets: &mut Vec<String>) -> Result<Operator> {
    if let Some(auth) = remote.swift_auth.take() {
        let (endpoint, token) = swift_auth::v1(&auth).await?;
        secrets.push(token.clone());
        remote.config.insert("endpoint".into(), endpoint);
        remote.config.insert("token".into(), token);
    }
    let scheme = remote.scheme.clone();
    Operator::via_iter(&scheme, remote.config).map_err(|e| {
        anyhow!(
            "cannot set up the {scheme} storage: {}",
            redact(&e.to_string(), secrets)
        )
    })
}

/// Whether `err` is a read refused for the object's size (see [`Storage::read`]).
pub fn is_too_large(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<StorageError>(),
        Some(StorageError::TooLarge { .. })
    )
}

pub fn is_not_found(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<StorageError>(),
        Some(StorageError::NotFound { .. })
    )
}
