//! Where the password comes from: --password-file, --password-command,
//! CAIRN_PASSWORD (read by the library's `PasswordSource`), else a prompt on
//! a terminal, else a clear error.

use super::GlobalArgs;
use anyhow::{anyhow, Result};
use cairn::repo::access::PasswordSource;
use std::io::IsTerminal;

pub fn read(g: &GlobalArgs, confirm: bool) -> Result<String> {
    if let Some(source) = source(g) {
        return source.read();
    }
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password("enter password for repository: ")?;
        if confirm && rpassword::prompt_password("enter the password again: ")? != p {
            return Err(anyhow!("the passwords do not match"));
        }
        return Ok(p);
    }
    Err(anyhow!(
        "no password given: set CAIRN_PASSWORD, or use --password-file / --password-command"
    ))
}

/// The source the flags and environment name, if any.
fn source(g: &GlobalArgs) -> Option<PasswordSource> {
    if let Some(path) = &g.password_file {
        return Some(PasswordSource::File(path.clone()));
    }
    if let Some(cmd) = &g.password_command {
        return Some(PasswordSource::Command(cmd.clone()));
    }
    std::env::var("CAIRN_PASSWORD")
        .ok()
        .map(PasswordSource::Value)
}
