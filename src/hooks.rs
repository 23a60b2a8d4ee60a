//! Commands a configured source runs around its backup (`before`, `after`).
//!
//! Semantics (README, "Hooks"): `before` runs first; if it fails, nothing is
//! backed up and `after` does not run (there is nothing to undo). Otherwise
//! `after` always runs, with `CAIRN_BACKUP_STATUS` = `success` or `failure`
//! (and `CAIRN_SNAPSHOT_ID` on success), so it can undo what `before` did.
//! Its own failure fails the job, but a snapshot already saved stays.
//! Both get `CAIRN_SOURCE`.

use crate::child_env::ChildEnv;
use crate::id::Id;
use crate::settings::SourceSettings;
use crate::source::command::{describe_status, shell_words};
use anyhow::{anyhow, Result};
use std::process::{Command, Stdio};

/// Runs `backup` between the `before` and `after` hooks of source `name`,
/// by the rules above. `backup` gives its result and the id of the
/// snapshot it saved, if any.
pub fn around_backup<T>(
    name: &str,
    source: &SourceSettings,
    backup: impl FnOnce() -> Result<(T, Option<Id>)>,
) -> Result<T> {
    let child_env = source.child_env();
    let mut env = vec![("CAIRN_SOURCE", name.to_string())];
    if let Some(before) = &source.before {
        run_hook("before", before, &env, &child_env)
            .map_err(|e| anyhow!("{e:#}; the backup of {name:?} did not run"))?;
    }
    let outcome = backup();
    let Some(after) = &source.after else {
        return outcome.map(|(value, _)| value);
    };
    let saved = outcome.as_ref().ok().and_then(|(_, id)| *id);
    let status = if outcome.is_ok() {
        "success"
    } else {
        "failure"
    };
    env.push(("CAIRN_BACKUP_STATUS", status.into()));
    if let Some(id) = saved {
        env.push(("CAIRN_SNAPSHOT_ID", id.to_hex()));
    }
    let hooked = run_hook("after", after, &env, &child_env);
    match (outcome, hooked) {
        (Ok((value, _)), Ok(())) => Ok(value),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(match saved {
            Some(id) => anyhow!("{e:#} (snapshot {} was saved and stays)", id.short()),
            None => e,
        }),
    }
}

/// Runs a hook with its output passed through; an error unless it exits 0.
pub fn run_hook(
    which: &str,
    argv: &[String],
    env: &[(&str, String)],
    child_env: &ChildEnv,
) -> Result<()> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| anyhow!("the {which} hook is an empty command"))?;
    let display = shell_words(argv);
    let mut cmd = Command::new(program);
    child_env.apply(&mut cmd);
    let status = cmd
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        // The hook's chatter goes to stderr, so stdout stays machine-readable
        // under --json.
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| anyhow!("cannot run the {which} hook `{display}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(anyhow!(
            "the {which} hook `{display}` {}",
            describe_status(status)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_see_their_environment_and_report_failure() {
        let argv: Vec<String> = ["sh", "-c", "test \"$CAIRN_BACKUP_STATUS\" = success"]
            .map(String::from)
            .to_vec();
        let env = ChildEnv::default();
        run_hook(
            "after",
            &argv,
            &[("CAIRN_BACKUP_STATUS", "success".into())],
            &env,
        )
        .unwrap();
        let e = run_hook(
            "after",
            &argv,
            &[("CAIRN_BACKUP_STATUS", "failure".into())],
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("the after hook `sh -c"), "{e}");
        assert!(e.contains("exited with status 1"), "{e}");
    }
}
