//! Where the password comes from: --password-file, --password-command,
//! CAIRN_PASSWORD (read by the library's `PasswordSource`), else a prompt on
//! a terminal, else a clear error.

use super::GlobalArgs;
use anyhow::{anyhow, Result};
use cairn::repo::access::PasswordSource;
use std::io::IsTerminal;

pub fn read(g: &GlobalArgs, confirm: bool) -> Result<String> {
    let chosen = PasswordSource::chosen(g.password_file.as_deref(), g.password_command.as_deref());
    if let Some(source) = chosen {
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
