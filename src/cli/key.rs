use super::render::message;
use super::GlobalArgs;
use anyhow::{anyhow, Context, Result};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// List the repository's keys (the one in use is marked *)
    List,
    /// Add a key: another password that opens the same data
    Add(NewPassword),
    /// Remove a key (not the one in use)
    Remove {
        /// The key's id or a unique prefix (see `key list`)
        id: String,
    },
    /// Change the password: add a key with the new one, remove the one in use
    Passwd(NewPassword),
}

#[derive(clap::Args)]
pub struct NewPassword {
    /// Read the new password from this file (first line); else it is asked
    /// for twice on the terminal
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
}

impl NewPassword {
    fn read(&self) -> Result<String> {
        if let Some(f) = &self.new_password_file {
            return cairn::repo::access::PasswordSource::File(f.clone()).read();
        }
        if !std::io::stdin().is_terminal() {
            return Err(anyhow!(
                "no new password given: use --new-password-file (there is no terminal to ask on)"
            ));
        }
        let p = rpassword::prompt_password("enter the new password: ")?;
        if rpassword::prompt_password("enter the new password again: ")? != p {
            return Err(anyhow!("the passwords do not match; nothing was changed"));
        }
        Ok(p)
    }
}

pub fn run(g: &GlobalArgs, a: &KeyCommand) -> Result<i32> {
    let repo = g.open_without_index()?;
    match a {
        KeyCommand::List => {
            let keys = repo.list_keys()?;
            if g.json {
                println!("{}", serde_json::to_string(&keys)?);
                return Ok(0);
            }
            println!(" {:<8}  {:<16}  {:<16}  created", "ID", "user", "host");
            for k in &keys {
                println!(
                    "{}{:<8}  {:<16}  {:<16}  {}",
                    if k.current { "*" } else { " " },
                    &k.id[..8],
                    k.username,
                    k.hostname,
                    k.created
                );
            }
        }
        KeyCommand::Add(new) => {
            let id = repo
                .add_key(new.read()?.as_bytes())
                .context("adding a key")?;
            say(g, "key_added", id, "added key");
        }
        KeyCommand::Remove { id } => {
            let id = repo.remove_key(id)?;
            say(g, "key_removed", id, "removed key");
        }
        KeyCommand::Passwd(new) => {
            let id = repo
                .change_password(new.read()?.as_bytes())
                .context("changing the password")?;
            say(
                g,
                "key_changed",
                id,
                "password changed; the repository's key is now",
            );
        }
    }
    Ok(0)
}

fn say(g: &GlobalArgs, kind: &str, id: cairn::Id, text: &str) {
    if g.json {
        println!(
            "{}",
            message(kind, &serde_json::json!({ "id": id.to_hex() }))
        );
    } else if !g.quiet {
        println!("{text} {}", id.short());
    }
}
