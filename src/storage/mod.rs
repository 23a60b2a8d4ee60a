//! Storage output: an OpenDAL operator chosen from a repository URL. All
//! repository I/O goes through [`Storage`], so a new backend is configuration.

use anyhow::{anyhow, Context, Result};
use opendal::{ErrorKind, Operator};
use std::future::IntoFuture;
use std::ops::Range;
use std::path::PathBuf;

/// A repository location and the operator that reaches it. Calls block the
/// calling thread; they must not be made from inside a tokio worker. Clones
/// share the operator and the I/O runtime (the lock refresher uses one).
#[derive(Clone)]
pub struct Storage {
    op: Operator,
    runtime: std::sync::Arc<tokio::runtime::Runtime>,
    location: String,
    local_root: Option<PathBuf>,
}

/// One listed object.
pub struct ListedObject {
    /// Path relative to the listed directory's parent, e.g. `data/ab/ab12…`.
    pub path: String,
    pub size: u64,
}

impl Storage {
    /// `url` is a local path or `memory://`.
    pub fn open(url: &str) -> Result<Storage> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the I/O runtime")?;
        let (op, local_root) = if url == "memory://" {
            (Operator::new(opendal::services::Memory::default())?, None)
        } else if url.contains("://") {
            return Err(anyhow!(
                "unsupported repository URL {url:?}: use a local path or memory://"
            ));
        } else {
            let root =
                std::path::absolute(url).with_context(|| format!("repository path {url:?}"))?;
            let root_str = root
                .to_str()
                .ok_or_else(|| anyhow!("repository path {url:?} is not UTF-8"))?;
            // Objects are written to a temporary file and renamed into place,
            // so a killed process never leaves a half-written object under its
            // final name.
            let builder = opendal::services::Fs::default()
                .root(root_str)
                .atomic_write_dir(&format!("{root_str}/.tmp"));
            (Operator::new(builder)?, Some(root))
        };
        Ok(Storage {
            op,
            runtime: std::sync::Arc::new(runtime),
            location: url.to_string(),
            local_root,
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// For local repositories, the directory (init creates it).
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        let buf = self
            .runtime
            .block_on(self.op.read(path))
            .map_err(|e| describe(e, "reading", path))?;
        Ok(buf.to_vec())
    }

    pub fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let want = range.end - range.start;
        let buf = self
            .runtime
            .block_on(self.op.read_with(path).range(range.clone()).into_future())
            .map_err(|e| describe(e, "reading", path))?;
        if buf.len() as u64 != want {
            return Err(anyhow!(
                "reading {path}: got {} bytes of range {}..{}: the object is truncated",
                buf.len(),
                range.start,
                range.end
            ));
        }
        Ok(buf.to_vec())
    }

    pub fn write(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        self.runtime
            .block_on(self.op.write(path, bytes))
            .map_err(|e| describe(e, "writing", path))?;
        Ok(())
    }

    pub fn exists(&self, path: &str) -> Result<bool> {
        self.runtime
            .block_on(self.op.exists(path))
            .map_err(|e| describe(e, "checking", path))
    }

    pub fn size(&self, path: &str) -> Result<u64> {
        let meta = self
            .runtime
            .block_on(self.op.stat(path))
            .map_err(|e| describe(e, "checking", path))?;
        Ok(meta.content_length())
    }

    pub fn delete(&self, path: &str) -> Result<()> {
        self.runtime
            .block_on(self.op.delete(path))
            .map_err(|e| describe(e, "deleting", path))
    }

    /// Every object below `dir` (e.g. `"snapshots/"`), recursively.
    pub fn list(&self, dir: &str) -> Result<Vec<ListedObject>> {
        let entries = match self
            .runtime
            .block_on(self.op.list_with(dir).recursive(true).into_future())
        {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(describe(e, "listing", dir)),
        };
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file() && !e.path().ends_with('/'))
            .map(|e| ListedObject {
                path: e.path().to_string(),
                size: e.metadata().content_length(),
            })
            .collect())
    }
}

/// A storage failure that names the object and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{doing} {path}: the object does not exist in the repository")]
    NotFound { doing: String, path: String },
    #[error("{doing} {path}: permission denied by the storage")]
    PermissionDenied { doing: String, path: String },
    #[error("{doing} {path}: {source}")]
    Other {
        doing: String,
        path: String,
        source: opendal::Error,
    },
}

fn describe(e: opendal::Error, doing: &str, path: &str) -> anyhow::Error {
    let (doing, path) = (doing.to_string(), path.to_string());
    anyhow::Error::new(match e.kind() {
        ErrorKind::NotFound => StorageError::NotFound { doing, path },
        ErrorKind::PermissionDenied => StorageError::PermissionDenied { doing, path },
        _ => StorageError::Other {
            doing,
            path,
            source: e,
        },
    })
}

pub fn is_not_found(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<StorageError>(),
        Some(StorageError::NotFound { .. })
    )
}
