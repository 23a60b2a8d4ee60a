//! The `cairn` binary: parse arguments, run the command, map failures to
//! exit codes (CLI.md).

mod cli;

fn main() {
    let code = match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            cli::exit_code_of(&e)
        }
    };
    std::process::exit(code);
}
