//! A command whose standard output is a backup stream (`pg_dump`, an export
//! tool). Its stdout is read straight into the pipeline; its stderr passes
//! through to ours and the last lines are kept, so a failure can say why.
//!
//! The contract (CLI.md): a command that exits non-zero or is killed yields
//! no snapshot. [`CommandStream::finish`] is where that is decided.

use crate::source::pipe::ReadAhead;
use anyhow::{anyhow, Result};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How many lines of the command's stderr an error message quotes.
const STDERR_TAIL_LINES: usize = 20;

pub struct CommandStream {
    display: String,
    child: Child,
    stdout: ReadAhead,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl CommandStream {
    /// Starts `argv` with stdin closed and stdout piped.
    pub fn spawn(argv: &[String], child_env: &crate::child_env::ChildEnv) -> Result<CommandStream> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| anyhow!("no command given to read the stream from"))?;
        let display = shell_words(argv);
        let mut cmd = Command::new(program);
        child_env.apply(&mut cmd);
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow!("cannot run `{display}`: {e}; check the command name and PATH"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        crate::source::pipe::enlarge(&stdout);
        let stdout = match ReadAhead::spawn(stdout) {
            Ok(reader) => reader,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(anyhow!(
                    "cannot start reading the output of `{display}`: {e}"
                ));
            }
        };
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr_tail);
        let name = program.clone();
        let stderr_thread = std::thread::spawn(move || relay_stderr(&name, stderr, &tail));
        Ok(CommandStream {
            display,
            child,
            stdout,
            stderr_tail,
            stderr_thread: Some(stderr_thread),
        })
    }

    /// The command line, for messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    pub fn reader(&mut self) -> &mut impl Read {
        &mut self.stdout
    }

    /// Waits for the command; an error unless it exited with status 0.
    pub fn finish(mut self) -> Result<()> {
        let status = self.child.wait()?;
        self.join_stderr();
        if status.success() {
            return Ok(());
        }
        Err(anyhow!(
            "`{}` {}; no snapshot was saved{}",
            self.display,
            describe_status(status),
            self.quoted_tail()
        ))
    }

    /// Stops the command after a failure on our side (storage error, Ctrl-C):
    /// nothing it writes from now on can be stored.
    pub fn abort(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_stderr();
    }

    fn join_stderr(&mut self) {
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
    }

    fn quoted_tail(&self) -> String {
        quote_tail(&self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn relay_stderr(name: &str, stderr: impl Read, tail: &Mutex<VecDeque<String>>) {
    let mut out = std::io::stderr();
    for line in BufReader::new(stderr).split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line).into_owned();
        let _ = writeln!(out, "{name}: {line}");
        let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig} ({})", signal_name(sig)),
        (None, None) => format!("ended abnormally ({status})"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(sig).map_or("unknown", |s| s.as_str())
}

/// `argv` as one line a person could paste into a shell.
pub fn shell_words(argv: &[String]) -> String {
    let quote = |w: &String| {
        let plain = !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
        if plain {
            w.clone()
        } else {
            format!("'{}'", w.replace('\'', r"'\''"))
        }
    };
    argv.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// `restore --to-command`: runs `argv` with `write` feeding its standard
/// input; an error unless all of it was written and the command exited 0.
pub fn feed_command(
    argv: &[String],
    write: impl FnOnce(&mut std::process::ChildStdin) -> Result<()>,
) -> Result<()> {
    if argv.is_empty() {
        return Err(anyhow!("--to-command needs a command after `--`"));
    }
    feed(
        argv,
        &crate::child_env::ChildEnv::AdHoc,
        Stdio::inherit(),
        write,
    )
}

/// Runs `argv` with `write` feeding its standard input and its standard
/// output going to `stdout`, its stderr passed through to ours and its
/// last lines quoted in the error; an error unless all of the input was
/// written and the command exited 0.
pub fn feed(
    argv: &[String],
    child_env: &crate::child_env::ChildEnv,
    stdout: Stdio,
    write: impl FnOnce(&mut std::process::ChildStdin) -> Result<()>,
) -> Result<()> {
    let display = shell_words(argv);
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| anyhow!("no command given to feed"))?;
    let mut cmd = Command::new(program);
    child_env.apply(&mut cmd);
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow!("cannot run `{display}`: {e}; check the command name and PATH"))?;
    // A command that exits early must give an error here, not kill us by
    // SIGPIPE (main restores the default disposition for `| head`). Set
    // after the spawn, so the command itself keeps the default.
    // SAFETY: changing a signal disposition to "ignore".
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let stderr = child.stderr.take().expect("stderr is piped");
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let relay = {
        let tail = Arc::clone(&tail);
        let name = program.clone();
        std::thread::spawn(move || relay_stderr(&name, stderr, &tail))
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let written = write(&mut stdin);
    drop(stdin); // end of input: the command can finish
    let status = child.wait()?;
    let _ = relay.join();
    let quoted = || {
        let tail = tail.lock().unwrap_or_else(|e| e.into_inner());
        quote_tail(&tail)
    };
    match (written, status.success()) {
        (Ok(()), true) => Ok(()),
        (_, false) => Err(anyhow!(
            "`{display}` {}{}",
            describe_status(status),
            quoted()
        )),
        (Err(e), true) => Err(e.context(format!(
            "`{display}` stopped reading before the end of the data"
        ))),
    }
}

/// The last lines a command wrote to stderr, for an error message.
fn quote_tail(tail: &VecDeque<String>) -> String {
    if tail.is_empty() {
        return " (it wrote nothing to stderr)".to_string();
    }
    let mut s = String::from("; the last lines of its stderr:");
    for line in tail {
        s.push_str("\n  ");
        s.push_str(line);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn output_is_streamed_and_success_is_ok() {
        let mut c = CommandStream::spawn(&argv(&["printf", "a\\nb"]), &Default::default()).unwrap();
        let mut out = String::new();
        c.reader().read_to_string(&mut out).unwrap();
        assert_eq!(out, "a\nb");
        c.finish().unwrap();
    }

    #[test]
    fn failure_names_the_status_and_quotes_stderr() {
        let script = "echo one >&2; echo two >&2; exit 3";
        let mut c =
            CommandStream::spawn(&argv(&["sh", "-c", script]), &Default::default()).unwrap();
        std::io::copy(c.reader(), &mut std::io::sink()).unwrap();
        let e = c.finish().unwrap_err().to_string();
        assert!(e.contains("exited with status 3"), "{e}");
        assert!(e.contains("no snapshot was saved"), "{e}");
        assert!(e.contains("\n  one\n  two"), "{e}");
    }

    #[test]
    fn a_killed_command_is_reported_by_signal() {
        let mut c =
            CommandStream::spawn(&argv(&["sh", "-c", "kill -9 $$"]), &Default::default()).unwrap();
        std::io::copy(c.reader(), &mut std::io::sink()).unwrap();
        let e = c.finish().unwrap_err().to_string();
        assert!(e.contains("killed by signal 9 (SIGKILL)"), "{e}");
    }

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let e = CommandStream::spawn(&argv(&["/no/such/dumper", "x"]), &Default::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot run `/no/such/dumper x`"), "{e}");
    }

    #[test]
    fn shell_words_quotes_what_needs_it() {
        assert_eq!(
            shell_words(&argv(&["pg_dump", "-d", "my db", "it's"])),
            r"pg_dump -d 'my db' 'it'\''s'"
        );
    }
}
