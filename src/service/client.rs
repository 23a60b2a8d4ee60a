//! Running a service's own client programs (`psql`, `pg_dump`, `mysql`,
//! `sqlite3`, `redis-cli`): from the source's `tools_dir` or from PATH, with
//! the environment a configured command may see, and errors that quote
//! what the program said.

use crate::child_env::ChildEnv;
use crate::source::command::{describe_status, feed, shell_words};
use anyhow::{anyhow, Result};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Where a service's client programs are, and what they may see.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    /// Directory holding the programs; `None`: found on PATH.
    pub dir: Option<PathBuf>,
    pub env: ChildEnv,
}

impl Tools {
    /// `program` followed by `args`, the program from `dir` when set.
    pub fn argv<S: AsRef<str>>(&self, program: &str, args: &[S]) -> Vec<String> {
        let program = match &self.dir {
            Some(dir) => dir.join(program).to_string_lossy().into_owned(),
            None => program.to_string(),
        };
        std::iter::once(program)
            .chain(args.iter().map(|a| a.as_ref().to_string()))
            .collect()
    }

    /// Runs `argv` to its end with `input` on its standard input and
    /// returns its standard output; an error, quoting its stderr, unless it
    /// exits 0.
    pub fn query(&self, argv: &[String], input: &str) -> Result<String> {
        let display = shell_words(argv);
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| anyhow!("no client program given"))?;
        let mut cmd = Command::new(program);
        self.env.apply(&mut cmd);
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                anyhow!(
                    "cannot run `{display}`: {e}; is the client installed (or `tools_dir` set)?"
                )
            })?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // A program that fails before reading its input closes the pipe:
        // its own message below says more than the write error would.
        let _ = stdin.write_all(input.as_bytes());
        drop(stdin);
        let out = child.wait_with_output()?;
        if out.status.success() {
            return String::from_utf8(out.stdout)
                .map_err(|_| anyhow!("`{display}` answered with bytes that are not UTF-8"));
        }
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.trim();
        Err(anyhow!(
            "`{display}` {}{}",
            describe_status(out.status),
            if said.is_empty() {
                " (it wrote nothing to stderr)".to_string()
            } else {
                format!(": {said}")
            }
        ))
    }

    /// Runs `argv` with `write` feeding its standard input. What it prints
    /// goes to our stderr: stdout is for cairn's own report (`--json`).
    /// A tool may stop reading once it has what it needs (`pg_restore
    /// --table`): its exit status, not the closed pipe, says whether it
    /// succeeded.
    pub fn feed(
        &self,
        argv: &[String],
        write: impl FnOnce(&mut std::process::ChildStdin) -> Result<()>,
    ) -> Result<()> {
        use std::os::fd::AsFd;
        let to_stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
        feed(argv, &self.env, Stdio::from(to_stderr), |stdin| {
            write(stdin).or_else(|e| if is_broken_pipe(&e) { Ok(()) } else { Err(e) })
        })
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A name (of a database, say) as a file name in the snapshot: `/` and `%`
/// written as `%2F` and `%25`, so every name has one file and back.
pub fn file_name_of(name: &str, extension: &str) -> String {
    let escaped = name.replace('%', "%25").replace('/', "%2F");
    format!("{escaped}{extension}")
}

/// The name [`file_name_of`] made `file` from, if `file` ends in `extension`.
pub fn name_of_file(file: &str, extension: &str) -> Option<String> {
    let escaped = file.strip_suffix(extension)?;
    Some(escaped.replace("%2F", "/").replace("%25", "%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_slashes_become_plain_file_names() {
        assert_eq!(file_name_of("app", ".dump"), "app.dump");
        assert_eq!(file_name_of("a/b%c", ".sql"), "a%2Fb%25c.sql");
        for name in ["app", "a/b%c", "%2F", "x%"] {
            let file = file_name_of(name, ".dump");
            assert_eq!(name_of_file(&file, ".dump").as_deref(), Some(name));
        }
        for odd in ["..", ".", "a/../b"] {
            assert!(crate::tree::is_valid_name(
                file_name_of(odd, ".dump").as_bytes()
            ));
        }
    }

    #[test]
    fn a_failing_query_quotes_the_programs_message() {
        let tools = Tools::default();
        let argv = tools.argv("sh", &["-c", "echo 'no such role' >&2; exit 2"]);
        let e = tools.query(&argv, "").unwrap_err().to_string();
        assert!(e.contains("exited with status 2: no such role"), "{e}");
        let argv = tools.argv("sh", &["-c", "tr a-z A-Z"]);
        assert_eq!(tools.query(&argv, "abc").unwrap(), "ABC");
    }
}
