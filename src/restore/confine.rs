//! Where a restore asked for by someone else (the REST API) may write: below
//! one of the directories the settings allow, reached without following a
//! symbolic link, and never into cairn's own data (a local repository, the
//! server's state, a cache). Without this, a link inside an allowed root
//! (`ROOT/x -> /etc`) would send a restore anywhere.

use std::path::{Component, Path, PathBuf};

/// Why a target was refused; the message says which rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("restores through the API are off: list allowed directories in server.restore_roots")]
    NoRoots,
    #[error("target {target:?} must be an absolute path without `..` below one of: {roots}")]
    OutsideRoots { target: String, roots: String },
    #[error(
        "target {target:?}: {link} is a symbolic link; restores through the API do not follow \
         links, so that they cannot leave their root"
    )]
    Link { target: String, link: String },
    #[error("target {target:?}: {path} exists and is not a directory")]
    NotADirectory { target: String, path: String },
    #[error("target {target:?} overlaps {what} ({path}); restore somewhere else")]
    Protected {
        target: String,
        what: String,
        path: String,
    },
    #[error("target {target:?}: cannot inspect {path}: {message}")]
    Unreadable {
        target: String,
        path: String,
        message: String,
    },
}

/// A directory a restore must neither enter nor contain, with what it is.
pub struct Protected<'a> {
    pub what: &'a str,
    pub path: &'a Path,
}

/// Checks `target` against the allowed `roots` and the `protected`
/// directories; returns the path to restore into. The existing part below
/// the root is inspected component by component without following links.
/// (A link made after this check is the restorer's to refuse.)
pub fn confine_target(
    target: &str,
    roots: &[PathBuf],
    protected: &[Protected<'_>],
) -> Result<PathBuf, TargetError> {
    if roots.is_empty() {
        return Err(TargetError::NoRoots);
    }
    let path = PathBuf::from(target);
    let plain = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    let root = roots.iter().find(|root| path.starts_with(root));
    let (Some(root), true) = (root, plain) else {
        return Err(TargetError::OutsideRoots {
            target: target.to_string(),
            roots: roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    // The root is the administrator's: links in it are theirs to make.
    let mut real = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
    let mut exists = true;
    for part in path
        .strip_prefix(root)
        .expect("below the root")
        .components()
    {
        real.push(part);
        if !exists {
            continue;
        }
        match std::fs::symlink_metadata(&real) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(TargetError::Link {
                    target: target.to_string(),
                    link: real.display().to_string(),
                })
            }
            Ok(m) if !m.is_dir() => {
                return Err(TargetError::NotADirectory {
                    target: target.to_string(),
                    path: real.display().to_string(),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => exists = false,
            Err(e) => {
                return Err(TargetError::Unreadable {
                    target: target.to_string(),
                    path: real.display().to_string(),
                    message: e.to_string(),
                })
            }
        }
    }
    for p in protected {
        let guarded = std::fs::canonicalize(p.path).unwrap_or_else(|_| p.path.to_path_buf());
        if real.starts_with(&guarded) || guarded.starts_with(&real) {
            return Err(TargetError::Protected {
                target: target.to_string(),
                what: p.what.to_string(),
                path: guarded.display().to_string(),
            });
        }
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_stays_below_its_root_links_and_protected_dirs_aside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("ok")).unwrap();
        std::fs::create_dir_all(root.join("state")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("x")).unwrap();
        std::fs::write(root.join("file"), b"").unwrap();
        let roots = [root.clone()];
        let state = root.join("state");
        let protected = [Protected {
            what: "the server's state directory",
            path: &state,
        }];
        let at = |rel: &str| format!("{}/{rel}", root.display());
        let confine = |t: &str| confine_target(t, &roots, &protected);

        assert_eq!(
            confine(&at("ok/new/deeper")),
            Ok(root.join("ok/new/deeper"))
        );
        assert!(matches!(confine(&at("x")), Err(TargetError::Link { .. })));
        assert!(matches!(
            confine(&at("x/sub")),
            Err(TargetError::Link { .. })
        ));
        assert!(matches!(
            confine(&at("file/sub")),
            Err(TargetError::NotADirectory { .. })
        ));
        assert!(matches!(
            confine(&at("state/j")),
            Err(TargetError::Protected { .. })
        ));
        // a target holding a protected directory could overwrite it too
        assert!(matches!(
            confine(&at("")),
            Err(TargetError::Protected { .. })
        ));
        for bad in ["/etc", "relative", &at("ok/../../etc")] {
            assert!(
                matches!(confine(bad), Err(TargetError::OutsideRoots { .. })),
                "{bad}"
            );
        }
        assert_eq!(confine_target("/x", &[], &[]), Err(TargetError::NoRoots));
    }
}
