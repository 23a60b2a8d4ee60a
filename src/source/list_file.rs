//! Lists read from files: exclude patterns (`--exclude-file`) and the paths
//! to back up (`--files-from`, `--files-from-verbatim`, `--files-from-raw`),
//! in restic's three forms. `-` reads standard input.

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

/// The paths listed in `file`.
pub fn read_paths(file: &Path, form: ListForm) -> Result<Vec<PathBuf>> {
    let bytes = read_all(file)?;
    Ok(split(&bytes, form)
        .into_iter()
        .map(|e| PathBuf::from(OsStr::from_bytes(e)))
        .collect())
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
