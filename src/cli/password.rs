//! Where the password comes from: --password-file, --password-command,
//! CAIRN_PASSWORD, else a prompt on a terminal, else a clear error.

use super::GlobalArgs;
use anyhow::{anyhow, Context, Result};
use std::io::IsTerminal;

pub fn read(g: &GlobalArgs, confirm: bool) -> Result<String> {
    if let Some(path) = &g.password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the password file {}", path.display()))?;
        return Ok(first_line(&text));
    }
    if let Some(cmd) = &g.password_command {
        let mut sh = std::process::Command::new("sh");
        cairn::child_env::ChildEnv::AdHoc.apply(&mut sh);
        let out = sh
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running the password command {cmd:?}"))?;
        if !out.status.success() {
            return Err(anyhow!(
                "the password command {cmd:?} failed ({})",
                out.status
            ));
        }
        return Ok(first_line(&String::from_utf8_lossy(&out.stdout)));
    }
    if let Ok(p) = std::env::var("CAIRN_PASSWORD") {
        return Ok(p);
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

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}
