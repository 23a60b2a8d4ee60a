//! Lists read from files: exclude patterns (`--exclude-file`) and the paths
//! to back up (`--files-from`, `--files-from-verbatim`, `--files-from-raw`),
//! in restic's three forms. `-` reads standard input. As in restic, lines
//! of `--files-from` are glob patterns (`*`, `?`, `[…]`) expanded against
//! the file system; the verbatim and raw forms are taken as written.

use anyhow::{anyhow, Context, Result};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How a list file is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListForm {
    /// One entry per line, trimmed; blank lines and `#` comments skipped.
    Lines,
    /// One entry per line exactly as written (only empty lines skipped).
    Verbatim,
    /// Entries separated by NUL bytes (`find -print0`).
    Raw,
}

fn read_all(file: &Path) -> Result<Vec<u8>> {
    if file == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the list from standard input")?;
        return Ok(bytes);
    }
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

/// The entries of `bytes` in `form`, as raw bytes.
pub fn split(bytes: &[u8], form: ListForm) -> Vec<&[u8]> {
    let (sep, trim) = match form {
        ListForm::Raw => (b'\0', false),
        ListForm::Verbatim => (b'\n', false),
        ListForm::Lines => (b'\n', true),
    };
    bytes
        .split(|b| *b == sep)
        .map(|e| if trim { e.trim_ascii() } else { e })
        .filter(|e| !e.is_empty() && !(trim && e.starts_with(b"#")))
        .collect()
}

/// The paths `file` lists.
#[derive(Debug, Default)]
pub struct ListedPaths {
    pub paths: Vec<PathBuf>,
    /// Patterns (of the `Lines` form) that matched nothing: skipped, as
    /// restic does, and worth a warning.
    pub unmatched: Vec<String>,
}

/// The paths listed in `file`; in the `Lines` form a line holding `*`, `?`
/// or `[` is a pattern and stands for what it matches, sorted.
pub fn read_paths(file: &Path, form: ListForm) -> Result<ListedPaths> {
    let bytes = read_all(file)?;
    let mut out = ListedPaths::default();
    for entry in split(&bytes, form) {
        let is_pattern = form == ListForm::Lines && entry.iter().any(|b| b"*?[".contains(b));
        if !is_pattern {
            out.paths.push(PathBuf::from(OsStr::from_bytes(entry)));
            continue;
        }
        let pattern = std::str::from_utf8(entry)
            .map_err(|_| anyhow!("{}: a pattern is not valid UTF-8", file.display()))?;
        let matches = glob::glob(pattern)
            .map_err(|e| anyhow!("{}: pattern {pattern:?}: {e}", file.display()))?;
        let before = out.paths.len();
        for m in matches {
            // (an entry that cannot be read is the backup's to report)
            out.paths.push(m.unwrap_or_else(|e| e.path().to_path_buf()));
        }
        if out.paths.len() == before {
            out.unmatched.push(pattern.to_string());
        }
    }
    Ok(out)
}

/// The patterns listed in `file` (one per line, `#` comments).
pub fn read_patterns(file: &Path) -> Result<Vec<String>> {
    let bytes = read_all(file)?;
    split(&bytes, ListForm::Lines)
        .into_iter()
        .map(|e| {
            String::from_utf8(e.to_vec())
                .map_err(|_| anyhow!("{}: a pattern is not valid UTF-8", file.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_from_lines_expand_patterns_and_the_other_forms_do_not() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["a.log", "b.log", "c.txt", "[x]"] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let d = dir.path().to_str().unwrap();
        let list = dir.path().join("list");
        std::fs::write(&list, format!("{d}/*.log\n{d}/c.txt\n{d}/none-*\n")).unwrap();
        let got = read_paths(&list, ListForm::Lines).unwrap();
        let names: Vec<String> = got
            .paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.log", "b.log", "c.txt"]);
        assert_eq!(got.unmatched, [format!("{d}/none-*")]);
        // the verbatim form takes `[x]` as a name
        std::fs::write(&list, format!("{d}/[x]\n")).unwrap();
        let got = read_paths(&list, ListForm::Verbatim).unwrap();
        assert_eq!(got.paths, [dir.path().join("[x]")]);
        // a broken pattern is an error that names it
        std::fs::write(&list, format!("{d}/[\n")).unwrap();
        let e = read_paths(&list, ListForm::Lines).unwrap_err().to_string();
        assert!(e.contains("pattern"), "{e}");
    }

    #[test]
    fn the_three_forms() {
        let text = b"  /a b \n# note\n\n/c\r\n";
        assert_eq!(split(text, ListForm::Lines), [&b"/a b"[..], b"/c"]);
        assert_eq!(
            split(text, ListForm::Verbatim),
            [&b"  /a b "[..], b"# note", b"/c\r"]
        );
        assert_eq!(
            split(b"/x\n1\0/y\0\0", ListForm::Raw),
            [&b"/x\n1"[..], b"/y"]
        );
    }
}
