//! Where finished jobs are remembered: one JSON file per job in the state
//! directory (`server.state_dir`, default `$XDG_STATE_HOME/cairn/serve`),
//! written whole and renamed into place, so a crash leaves the old record
//! or the new one, never half of one. The newest `server.job_history`
//! records are kept.

use super::jobs::Job;
use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};

pub struct JobStore {
    dir: PathBuf,
    pub history: usize,
}

impl JobStore {
    pub fn open(state_dir: &Path, history: usize) -> Result<JobStore> {
        let dir = state_dir.join("jobs");
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "cannot create the job history directory {}; set server.state_dir to a writable place",
                dir.display()
            )
        })?;
        Ok(JobStore { dir, history })
    }

    /// Every record, oldest first. An unreadable record is skipped with a
    /// warning: history must not stop the server.
    pub fn load(&self) -> Result<Vec<Job>> {
        let mut jobs = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| serde_json::from_slice::<Job>(&b).map_err(Into::into))
            {
                Ok(job) => jobs.push(job),
                Err(e) => log::warn!("skipping job record {}: {e}", path.display()),
            }
        }
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        let excess = jobs.len().saturating_sub(self.history);
        for old in jobs.drain(..excess) {
            self.forget(&old.id);
        }
        Ok(jobs)
    }

    pub fn save(&self, job: &Job) -> Result<()> {
        let path = self.path(&job.id)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(job)?)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("saving job record {}", path.display()))
    }

    pub fn forget(&self, id: &str) {
        if let Ok(path) = self.path(id) {
            let _ = std::fs::remove_file(path);
        }
    }

    fn path(&self, id: &str) -> Result<PathBuf> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(anyhow!("bad job id {id:?}"));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }
}
