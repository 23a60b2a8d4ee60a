//! Exclude patterns (`--exclude`, `--exclude-file`). A pattern with a `/` is
//! matched against the whole absolute path; one without, against each entry's
//! name. `*` stays within one path component, `**` crosses them.

use anyhow::{Context, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::path::Path;

#[derive(Clone)]
pub struct Excludes {
    by_path: GlobSet,
    by_name: GlobSet,
    patterns: Vec<String>,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes> {
        let mut by_path = GlobSetBuilder::new();
        let mut by_name = GlobSetBuilder::new();
        for p in patterns {
            let glob = GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .with_context(|| format!("invalid exclude pattern {p:?}"))?;
            if p.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        Ok(Excludes {
            by_path: by_path.build()?,
            by_name: by_name.build()?,
            patterns: patterns.to_vec(),
        })
    }

    /// Reads patterns from a file: one per line, blank lines and `#` comments skipped.
    pub fn read_pattern_file(path: &Path) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading exclude file {}", path.display()))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect())
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn is_excluded(&self, path: &Path) -> bool {
        if self.by_path.is_match(path) {
            return true;
        }
        path.file_name()
            .is_some_and(|name| self.by_name.is_match(Path::new(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_path_patterns() {
        let e =
            Excludes::new(&["*.tmp".into(), "/data/cache".into(), "/srv/**/logs".into()]).unwrap();
        assert!(e.is_excluded(Path::new("/x/y/a.tmp")));
        assert!(e.is_excluded(Path::new("/data/cache")));
        assert!(!e.is_excluded(Path::new("/data/cache2")));
        assert!(e.is_excluded(Path::new("/srv/a/b/logs")));
        assert!(!e.is_excluded(Path::new("/x/y/a.tmpx")));
    }
}
