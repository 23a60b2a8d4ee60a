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

/// The password of a copy's source repository: --from-password-file,
/// --from-password-command, CAIRN_FROM_PASSWORD, else a prompt on a terminal.
pub fn read_source(from: &super::FromRepoArgs) -> Result<String> {
    let chosen = PasswordSource::chosen_or_env(
        from.from_password_file.as_deref(),
        from.from_password_command.as_deref(),
        "CAIRN_FROM_PASSWORD",
    );
    if let Some(source) = chosen {
        return source.read();
    }
    if std::io::stdin().is_terminal() {
        return Ok(rpassword::prompt_password(
            "enter password for the source repository: ",
        )?);
    }
    Err(anyhow!(
        "no password for the source repository given: set CAIRN_FROM_PASSWORD, or use \
         --from-password-file / --from-password-command"
    ))
}
