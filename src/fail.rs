//! Failures a user (or a script) must tell apart, each with its exit code
//! (CLI.md). Everything else is a plain error with exit code 1.

#[derive(Debug, thiserror::Error)]
pub enum Fail {
    #[error(
        "no repository at {0}: create one with `cairn init`, or check --repo / CAIRN_REPOSITORY"
    )]
    RepoNotFound(String),
    #[error("a repository already exists at {0}: refusing to overwrite it")]
    RepoExists(String),
    #[error("wrong password: no key of the repository at {0} opens with it")]
    WrongPassword(String),
    #[error("repository is locked: {0}")]
    Locked(String),
    #[error(
        "interrupted: everything already stored stays valid; run the command again to continue"
    )]
    Interrupted,
}

impl Fail {
    pub fn exit_code(&self) -> i32 {
        match self {
            Fail::RepoNotFound(_) => 10,
            Fail::RepoExists(_) => 1,
            Fail::WrongPassword(_) => 12,
            Fail::Locked(_) => 11,
            Fail::Interrupted => 130,
        }
    }
}
