//! What a backup leaves out, with restic's meaning, so habits and exclude
//! files carry over (`--exclude`, `--iexclude`, `--exclude-file`,
//! `--exclude-caches`, `--exclude-if-present`, `--exclude-larger-than`, and
//! the same keys in the settings file).
//!
//! Patterns (also restore's `--include`/`--exclude`):
//! - one starting with `/` is anchored at the root; any other matches at
//!   any depth: `node_modules`, `b/c` and `*.tmp` match `/x/node_modules`,
//!   `/x/b/c` and `/x/y/a.tmp`;
//! - a pattern that matches a directory matches everything below it;
//! - `*` stays within one path component, `**` crosses them; `?`, `[a-z]`,
//!   `{a,b}` as usual, and `\` escapes;
//! - a trailing `/` matches directories only;
//! - `!PATTERN` takes back what an earlier pattern excluded: of the
//!   patterns that match, the last decides. (As in restic, a directory that
//!   is excluded is not read, so `!` cannot bring back something below it:
//!   exclude `/data/*` and re-include `!/data/keep`.)

use super::stat::Stat;
use anyhow::{anyhow, Context, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::io::Read;
use std::path::Path;

/// `--exclude-caches`: a directory holding a `CACHEDIR.TAG` that starts with
/// this line is a cache (<https://bford.info/cachedir/>).
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55";

/// Everything that decides what a backup leaves out.
#[derive(Debug, Clone, Default)]
pub struct ExcludeOptions {
    pub patterns: Vec<String>,
    /// Matched ignoring case.
    pub ipatterns: Vec<String>,
    /// `NAME` or `NAME:HEADER`: the contents of a directory holding a file
    /// NAME (that starts with HEADER) are left out, but for that file.
    pub if_present: Vec<String>,
    /// Files larger than this many bytes are left out.
    pub larger_than: Option<u64>,
}

impl ExcludeOptions {
    /// The patterns as a snapshot records them (`--iexclude` ones marked).
    pub fn recorded(&self) -> Vec<String> {
        let mut all = self.patterns.clone();
        all.extend(
            self.ipatterns
                .iter()
                .map(|p| format!("(ignoring case) {p}")),
        );
        all
    }
}

/// An ordered list of patterns (see the module comment), compiled.
#[derive(Clone)]
pub struct Patterns {
    set: GlobSet,
    /// Per glob of `set`: its rule, and whether it is the glob matching what
    /// lies below the rule's own matches.
    globs: Vec<(usize, bool)>,
    rules: Vec<Rule>,
    patterns: Vec<String>,
}

#[derive(Clone, Copy)]
struct Rule {
    negated: bool,
    dirs_only: bool,
}

impl Patterns {
    pub fn new(patterns: &[String]) -> Result<Patterns> {
        Patterns::build(patterns, false)
    }

    pub fn ignoring_case(patterns: &[String]) -> Result<Patterns> {
        Patterns::build(patterns, true)
    }

    fn build(patterns: &[String], ignore_case: bool) -> Result<Patterns> {
        let mut set = GlobSetBuilder::new();
        let mut globs = Vec::new();
        let mut rules = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let (negated, body) = match p.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, p.as_str()),
            };
            let dirs_only = body.len() > 1 && body.ends_with('/');
            let body = if dirs_only {
                body.trim_end_matches('/')
            } else {
                body
            };
            if body.is_empty() {
                return Err(anyhow!("exclude pattern {p:?} is empty"));
            }
            let anchored = if body.starts_with('/') {
                body.to_string()
            } else {
                format!("**/{body}")
            };
            for (glob, below) in [(anchored.clone(), false), (format!("{anchored}/**"), true)] {
                let compiled = GlobBuilder::new(&glob)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .case_insensitive(ignore_case)
                    .build()
                    .with_context(|| format!("invalid exclude pattern {p:?}"))?;
                set.add(compiled);
                globs.push((i, below));
            }
            rules.push(Rule { negated, dirs_only });
        }
        Ok(Patterns {
            set: set.build()?,
            globs,
            rules,
            patterns: patterns.to_vec(),
        })
    }

    /// Reads patterns from a file: one per line, blank lines and `#`
    /// comments skipped, surrounding spaces trimmed.
    pub fn read_file(path: &Path) -> Result<Vec<String>> {
        super::list_file::read_patterns(path)
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether the last pattern matching `path` (absolute) excludes it.
    pub fn matches(&self, path: &Path, is_dir: bool) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        self.set
            .matches(path)
            .into_iter()
            .map(|g| self.globs[g])
            .filter(|&(rule, below)| below || is_dir || !self.rules[rule].dirs_only)
            .map(|(rule, _)| rule)
            .max()
            .is_some_and(|rule| !self.rules[rule].negated)
    }
}

/// [`ExcludeOptions`], compiled: what the backup's walkers ask.
#[derive(Clone)]
pub struct Excludes {
    patterns: Patterns,
    ipatterns: Patterns,
    /// (file name, header it must start with).
    if_present: Vec<(String, Option<Vec<u8>>)>,
    larger_than: Option<u64>,
}

impl Excludes {
    pub fn new(opts: &ExcludeOptions) -> Result<Excludes> {
        let if_present = opts
            .if_present
            .iter()
            .map(|spec| {
                let (name, header) = match spec.split_once(':') {
                    Some((n, h)) => (n, Some(h.as_bytes().to_vec())),
                    None => (spec.as_str(), None),
                };
                if name.is_empty() || name.contains('/') {
                    return Err(anyhow!(
                        "--exclude-if-present {spec:?}: give a file name (NAME or NAME:HEADER)"
                    ));
                }
                Ok((name.to_string(), header))
            })
            .collect::<Result<_>>()?;
        Ok(Excludes {
            patterns: Patterns::new(&opts.patterns)?,
            ipatterns: Patterns::ignoring_case(&opts.ipatterns)?,
            if_present,
            larger_than: opts.larger_than,
        })
    }

    /// Whether the entry at `path` (absolute), as `lstat` gives it, is left
    /// out by a pattern or its size.
    pub fn excludes(&self, path: &Path, stat: &Stat) -> bool {
        let is_dir = stat.is_dir();
        if self.patterns.matches(path, is_dir) || self.ipatterns.matches(path, is_dir) {
            return true;
        }
        self.larger_than
            .is_some_and(|limit| stat.is_file() && stat.size > limit)
    }

    /// The marker file `dir` holds, if any (`--exclude-if-present`,
    /// `--exclude-caches`): then every entry of `dir` but the marker itself
    /// is left out (the directory stays, so it shows what was skipped).
    pub fn marker_in(&self, dir: &Path) -> Option<String> {
        self.if_present
            .iter()
            .find(|(name, header)| marked(dir, name, header.as_deref()))
            .map(|(name, _)| name.clone())
    }

    /// Whether the entry `name` of a directory holding `marker` is left out.
    pub fn left_out_beside(marker: Option<&str>, name: &[u8]) -> bool {
        marker.is_some_and(|m| m.as_bytes() != name)
    }
}

/// Whether `dir` holds a regular file `name` starting with `header`.
fn marked(dir: &Path, name: &str, header: Option<&[u8]>) -> bool {
    let file = dir.join(name);
    let Ok(meta) = std::fs::symlink_metadata(&file) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    let Some(header) = header else {
        return true;
    };
    let mut start = vec![0u8; header.len()];
    std::fs::File::open(&file)
        .and_then(|mut f| f.read_exact(&mut start))
        .is_ok_and(|()| start == header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(p: &[&str]) -> Patterns {
        Patterns::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn file(p: &Patterns, path: &str) -> bool {
        p.matches(Path::new(path), false)
    }

    #[test]
    fn relative_patterns_match_at_any_depth() {
        let p = patterns(&["node_modules", "b/c", "*.tmp"]);
        assert!(file(&p, "/node_modules"));
        assert!(file(&p, "/x/y/node_modules"));
        assert!(file(&p, "/x/node_modules/pkg/index.js"), "below a match");
        assert!(file(&p, "/x/b/c"));
        assert!(file(&p, "/b/c/d"));
        assert!(!file(&p, "/x/ab/c"));
        assert!(file(&p, "/x/y/a.tmp"));
        assert!(!file(&p, "/x/y/a.tmpx"));
        assert!(!file(&p, "/x/node_modules2"));
    }

    #[test]
    fn anchored_patterns_match_from_the_root_only() {
        let p = patterns(&["/data/cache", "/srv/**/logs"]);
        assert!(file(&p, "/data/cache"));
        assert!(file(&p, "/data/cache/x"));
        assert!(!file(&p, "/data/cache2"));
        assert!(!file(&p, "/x/data/cache"));
        assert!(file(&p, "/srv/a/b/logs"));
        assert!(file(&p, "/srv/logs"));
    }

    #[test]
    fn a_trailing_slash_means_directories_only() {
        let p = patterns(&["build/"]);
        assert!(p.matches(Path::new("/x/build"), true));
        assert!(!p.matches(Path::new("/x/build"), false));
        assert!(file(&p, "/x/build/out.o"));
    }

    #[test]
    fn the_last_matching_pattern_decides() {
        let p = patterns(&["*.log", "!important.log"]);
        assert!(file(&p, "/var/a.log"));
        assert!(!file(&p, "/var/important.log"));
        let p = patterns(&["/data/*", "!/data/keep"]);
        assert!(file(&p, "/data/other"));
        assert!(!file(&p, "/data/keep"));
        assert!(!file(&p, "/data/keep/x"));
    }

    #[test]
    fn case_can_be_ignored() {
        let p = Patterns::ignoring_case(&["*.JPG".to_string()]).unwrap();
        assert!(file(&p, "/photos/a.jpg"));
        assert!(file(&p, "/photos/B.Jpg"));
        assert!(!file(&patterns(&["*.JPG"]), "/photos/a.jpg"));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_pattern_named() {
        let e = Patterns::new(&["a[".to_string()]).err().unwrap();
        assert!(format!("{e:#}").contains("\"a[\""), "{e:#}");
        assert!(Patterns::new(&["!".to_string()]).is_err());
        let e = Excludes::new(&ExcludeOptions {
            if_present: vec!["a/b".into()],
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(format!("{e:#}").contains("NAME"), "{e:#}");
    }

    #[test]
    fn marker_files_and_sizes() {
        let dir = std::env::temp_dir().join(format!("cairn-exclude-{}", std::process::id()));
        let cache = dir.join("cache");
        let plain = dir.join("plain");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::create_dir_all(&plain).unwrap();
        std::fs::write(
            cache.join("CACHEDIR.TAG"),
            "Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
        )
        .unwrap();
        std::fs::write(plain.join("CACHEDIR.TAG"), "not a real tag").unwrap();
        std::fs::write(plain.join("big"), vec![0u8; 2000]).unwrap();
        std::fs::write(plain.join(".nobackup"), "").unwrap();
        let meta = |p: &Path| crate::source::stat::lstat(p).unwrap();
        let caches = Excludes::new(&ExcludeOptions {
            if_present: vec![CACHEDIR_TAG.into()],
            larger_than: Some(1000),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(caches.marker_in(&cache).as_deref(), Some("CACHEDIR.TAG"));
        assert_eq!(caches.marker_in(&plain), None, "wrong signature");
        assert!(caches.excludes(&plain.join("big"), &meta(&plain.join("big"))));
        assert!(
            !caches.excludes(&plain, &meta(&plain)),
            "sizes are for files"
        );
        let marked = Excludes::new(&ExcludeOptions {
            if_present: vec![".nobackup".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(marked.marker_in(&plain).as_deref(), Some(".nobackup"));
        assert_eq!(marked.marker_in(&cache), None);
        assert!(Excludes::left_out_beside(Some(".nobackup"), b"big"));
        assert!(!Excludes::left_out_beside(Some(".nobackup"), b".nobackup"));
        assert!(!Excludes::left_out_beside(None, b"big"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
