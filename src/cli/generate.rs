//! `cairn generate`: shell completions and man pages, made from the same
//! argument definitions the binary parses, so they cannot drift.

use super::GlobalArgs;
use anyhow::{anyhow, Context, Result};
use clap::CommandFactory;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Write the bash completion script to FILE
    #[arg(long, value_name = "FILE")]
    bash_completion: Option<PathBuf>,
    /// Write the zsh completion script to FILE
    #[arg(long, value_name = "FILE")]
    zsh_completion: Option<PathBuf>,
    /// Write the fish completion script to FILE
    #[arg(long, value_name = "FILE")]
    fish_completion: Option<PathBuf>,
    /// Write man pages (cairn.1 and one per command) into DIR
    #[arg(long, value_name = "DIR")]
    man: Option<PathBuf>,
}

pub fn run(g: &GlobalArgs, a: &GenerateArgs) -> Result<i32> {
    use clap_complete::Shell;
    let shells = [
        (Shell::Bash, &a.bash_completion),
        (Shell::Zsh, &a.zsh_completion),
        (Shell::Fish, &a.fish_completion),
    ];
    if shells.iter().all(|(_, f)| f.is_none()) && a.man.is_none() {
        return Err(anyhow!(
            "nothing to generate: give --bash-completion, --zsh-completion, --fish-completion \
             or --man"
        ));
    }
    for (shell, file) in shells {
        let Some(file) = file else { continue };
        let mut out = create(file)?;
        clap_complete::generate(shell, &mut super::Cli::command(), "cairn", &mut out);
        said(g, file);
    }
    if let Some(dir) = &a.man {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        clap_mangen::generate_to(super::Cli::command(), dir)
            .with_context(|| format!("writing man pages into {}", dir.display()))?;
        said(g, dir);
    }
    Ok(0)
}

fn create(file: &Path) -> Result<std::fs::File> {
    std::fs::File::create(file).with_context(|| format!("cannot write {}", file.display()))
}

fn said(g: &GlobalArgs, what: &Path) {
    if !g.quiet && !g.json {
        println!("wrote {}", what.display());
    }
}
