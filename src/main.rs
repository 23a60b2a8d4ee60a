//! The `cairn` binary: parse arguments, run the command, map failures to
//! exit codes (CLI.md).

mod cli;

fn main() {
    // Like other Unix tools, end quietly when the reader of our output goes
    // away (`cairn ls latest | head`) instead of panicking on a closed pipe.
    // Everything already stored stays valid, as after any kill.
    // SAFETY: restoring the default disposition, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let code = match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            cli::exit_code_of(&e)
        }
    };
    std::process::exit(code);
}
