//! Argument parsing and one module per command. No logic lives here: each
//! command maps its arguments to a library call and renders the result.

mod backup;
mod cache;
mod cat;
mod check;
mod copy;
mod diff;
mod drill;
mod dump;
mod find;
mod forget;
mod generate;
mod init;
mod key;
mod ls;
mod mount;
mod password;
mod progress;
mod prune;
mod render;
mod repair;
mod restore;
mod serve;
mod snapshots;
mod stats;
mod tag;
mod unlock;

use anyhow::{anyhow, Result};
use cairn::fail::Fail;
use cairn::repo::lock::{LockKind, LockOptions};
use cairn::repo::snapshots::{ListedSnapshots, SnapshotFilter};
use cairn::repo::{CacheLocation, FoundRepository, OpenedRepository, Repository};
use cairn::storage::{Storage, StorageOptions};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Fast, deduplicating, encrypted backups",
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct GlobalArgs {
    /// Repository: a local path, s3://BUCKET/PREFIX, swift://CONTAINER/PREFIX,
    /// opendal:SCHEME (settings via -o) or memory://
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    repo: Option<String>,
    /// A storage setting, KEY=VALUE (repeatable): s3.endpoint=URL, s3.region=R,
    /// s3.path-style=true, swift.endpoint=URL, swift.token=T, or any OpenDAL
    /// setting of the service (SCHEME.key=value, bare key=value for opendal:SCHEME).
    /// CAIRN_STORAGE_OPTIONS holds such settings one per line, out of `ps`'s sight
    #[arg(short = 'o', long = "option", global = true, value_parser = parse_storage_option)]
    options: Vec<(String, String)>,
    /// Average upload rate limit in KiB/s
    #[arg(long, global = true, value_name = "KiB/s")]
    limit_upload: Option<u64>,
    /// Average download rate limit in KiB/s
    #[arg(long, global = true, value_name = "KiB/s")]
    limit_download: Option<u64>,
    /// Read the password from this file (first line)
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Run this command and use its output as the password
    #[arg(long, env = "CAIRN_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// Where the local index cache lives (default: the user's cache dir)
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Use a throw-away cache (slower: the index is read from the repository)
    #[arg(long, global = true)]
    no_cache: bool,
    /// Machine-readable output
    #[arg(long, global = true)]
    json: bool,
    /// Print less
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Name each file as it is processed: -v what is stored or written,
    /// -vv also what is left unchanged (backup, restore)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Wait this long for a conflicting lock to go away (e.g. 30s, 5m, 1h)
    #[arg(long, global = true, value_parser = parse_duration, default_value = "0s")]
    retry_lock: std::time::Duration,
    /// Take no lock (read-only commands on read-only storage)
    #[arg(long, global = true)]
    no_lock: bool,
}

fn parse_storage_option(s: &str) -> Result<(String, String)> {
    cairn::storage::location::parse_option(s)
}

/// `30s`, `5m`, `1h30m`, `2d`, `1w`: at most ten years.
pub fn parse_duration(s: &str) -> Result<std::time::Duration> {
    cairn::duration::parse(s)
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository
    Init(init::InitArgs),
    /// Back up files and directories, or a stream from stdin
    Backup(backup::BackupArgs),
    /// List snapshots
    Snapshots(snapshots::SnapshotsArgs),
    /// List the entries of a snapshot
    Ls(ls::LsArgs),
    /// Restore a snapshot (or part of it) into a directory
    Restore(restore::RestoreArgs),
    /// Find files and directories by name in snapshots
    Find(find::FindArgs),
    /// Show what changed between two snapshots
    Diff(diff::DiffArgs),
    /// Write a file to stdout, or a directory as a tar stream
    Dump(dump::DumpArgs),
    /// Print a repository object as JSON, for debugging
    Cat(cat::CatArgs),
    /// Verify the repository: structure, and with --read-data every blob
    Check(check::CheckArgs),
    /// Remove snapshots by policy (--keep-*) or by id
    Forget(forget::ForgetArgs),
    /// Delete data no snapshot needs; repack mostly unused packs
    Prune(prune::PruneCommand),
    /// How much data snapshots hold
    Stats(stats::StatsArgs),
    /// Copy snapshots from another repository (--from-repo), with only the
    /// data this one lacks
    Copy(copy::CopyArgs),
    /// Add, remove or set the tags of snapshots
    Tag(tag::TagArgs),
    /// Remove stale locks (or, with --remove-all, every lock)
    Unlock(unlock::UnlockArgs),
    /// Rebuild damaged repository structures
    #[command(subcommand)]
    Repair(repair::RepairCommand),
    /// Browse the repository as a read-only file system (FUSE)
    Mount(mount::MountArgs),
    /// Manage the repository's keys (passwords)
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Run the scheduler and the REST API of a settings file
    Serve(serve::ServeArgs),
    /// Run a restore drill of a settings file: recover the latest backup of
    /// its source into scratch space and check it
    Drill(drill::DrillArgs),
    /// List the local caches, or remove old ones
    Cache(cache::CacheArgs),
    /// Write shell completions and man pages
    Generate(generate::GenerateArgs),
    /// Print version, commit, target and features
    Version,
}

/// `--host/--tag/--path`: how `latest` and listings are narrowed.
#[derive(Args, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable)
    #[arg(long = "host", short = 'H')]
    hosts: Vec<String>,
    /// Only snapshots with these tags (repeatable; "a,b" needs both)
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only snapshots of this backed-up path (repeatable)
    #[arg(long = "path")]
    paths: Vec<String>,
}

impl FilterArgs {
    fn filter(&self) -> SnapshotFilter {
        SnapshotFilter {
            hosts: self.hosts.clone(),
            tags: self.tags.clone(),
            paths: self.paths.clone(),
        }
    }
}

impl GlobalArgs {
    fn repo_url(&self) -> Result<&str> {
        self.repo
            .as_deref()
            .ok_or_else(|| anyhow!("no repository given: use -r/--repo or set CAIRN_REPOSITORY"))
    }

    fn storage_options(&self) -> Result<StorageOptions> {
        let mut options = self.options.clone();
        if options.is_empty() {
            options = cairn::storage::location::options_from_env()?;
        }
        Ok(StorageOptions {
            options,
            limit_upload: self.limit_upload.map(|k| k * 1024),
            limit_download: self.limit_download.map(|k| k * 1024),
        })
    }

    fn storage(&self) -> Result<Storage> {
        Storage::open_with(self.repo_url()?, &self.storage_options()?)
    }

    fn cache(&self) -> CacheLocation {
        if self.no_cache {
            return CacheLocation::None;
        }
        CacheLocation::dir_or_default(self.cache_dir.as_deref())
    }

    pub fn open(&self) -> Result<Repository> {
        self.open_without_index()?.load_index(&self.cache())
    }

    /// [`Self::open`], with `pick` resolving snapshots meanwhile (see
    /// [`OpenedRepository::load_index_picking`]).
    pub fn open_picking<T: Send>(
        &self,
        pick: impl FnOnce(&ListedSnapshots) -> Result<T> + Send,
    ) -> Result<(Repository, T)> {
        let (found, password) = self.find_then_ask_password()?;
        let (opened, listed) = found.unlock_listing(password.as_bytes())?;
        opened.load_index_picking(listed, &self.cache(), pick)
    }

    /// The key unlocked, the index not loaded (listing snapshots).
    pub fn open_without_index(&self) -> Result<OpenedRepository> {
        let (found, password) = self.find_then_ask_password()?;
        found.unlock(password.as_bytes())
    }

    /// The repository, then its password: "no repository" comes before a
    /// password prompt.
    fn find_then_ask_password(&self) -> Result<(FoundRepository, String)> {
        let found =
            cairn::repo::access::find_repository(self.repo_url()?, &self.storage_options()?)?;
        Ok((found, password::read(self, false)?))
    }

    /// Opens the repository and takes the lock `command` needs (unless
    /// --no-lock, which only read-only commands survive).
    pub fn open_locked(&self, kind: LockKind, command: &str) -> Result<Repository> {
        let repo = self.open()?;
        if !self.no_lock {
            let opts = LockOptions {
                retry: self.retry_lock,
                command: command.to_string(),
            };
            repo.lock(kind, &opts)?;
        }
        Ok(repo)
    }
}

/// Ctrl-C / SIGTERM set a flag the long commands check; a second Ctrl-C exits at once.
pub fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))?;
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

/// The source repository of `copy` and `init --copy-chunker-params`
/// (restic's names).
#[derive(Args, Clone, Default)]
pub struct FromRepoArgs {
    /// The source repository (a path or URL, as for --repo)
    #[arg(long = "from-repo", env = "CAIRN_FROM_REPOSITORY", value_name = "URL")]
    from_repo: Option<String>,
    /// Read the source repository's password from this file (first line);
    /// else CAIRN_FROM_PASSWORD, else a prompt
    #[arg(long, env = "CAIRN_FROM_PASSWORD_FILE")]
    from_password_file: Option<PathBuf>,
    /// Run this command and use its output as the source repository's password
    #[arg(long, env = "CAIRN_FROM_PASSWORD_COMMAND")]
    from_password_command: Option<String>,
    /// A storage setting of the source repository, KEY=VALUE (repeatable);
    /// default: the settings given by -o
    #[arg(long = "from-option", value_parser = parse_storage_option, value_name = "KEY=VALUE")]
    from_options: Vec<(String, String)>,
}

impl FromRepoArgs {
    pub fn is_given(&self) -> bool {
        self.from_repo.is_some()
    }

    /// The source repository, its key unlocked, the index not loaded.
    pub fn open_without_index(&self, g: &GlobalArgs) -> Result<OpenedRepository> {
        let url = self.from_repo.as_deref().ok_or_else(|| {
            anyhow!("no source repository given: use --from-repo or set CAIRN_FROM_REPOSITORY")
        })?;
        let mut storage = g.storage_options()?;
        if !self.from_options.is_empty() {
            storage.options = self.from_options.clone();
        }
        let found = cairn::repo::access::find_repository(url, &storage)?;
        let password = password::read_source(self)?;
        found
            .unlock(password.as_bytes())
            .map_err(|e| e.context(format!("opening the source repository {url}")))
    }
}

/// Runs the command line; the exit code. A failure is told on stderr: as
/// `error: …`, or with --json as one JSON object (`message_type`
/// "exit_error", `code`, `message`), as restic does.
pub fn run() -> i32 {
    let cli = Cli::parse();
    match run_command(&cli) {
        Ok(code) => code,
        Err(e) => {
            let code = exit_code_of(&e);
            if cli.global.json {
                let error = serde_json::json!({
                    "message_type": "exit_error",
                    "code": code,
                    "message": format!("{e:#}"),
                });
                eprintln!("{error}");
            } else {
                eprintln!("error: {e:#}");
            }
            code
        }
    }
}

fn run_command(cli: &Cli) -> Result<i32> {
    let g = &cli.global;
    // main keeps SIGPIPE's default so `cairn ls … | head` ends quietly. The
    // commands that talk to storage at length ignore it instead: a server
    // that closes a connection mid-request (HTTP writes use writev, which
    // raises SIGPIPE) must give a retried error, not kill the process
    // silently. Children still start with the default (std resets it).
    if matches!(
        cli.command,
        Command::Backup(_)
            | Command::Restore(_)
            | Command::Drill(_)
            | Command::Check(_)
            | Command::Forget(_)
            | Command::Prune(_)
            | Command::Repair(_)
            | Command::Serve(_)
            | Command::Init(_)
            | Command::Unlock(_)
            | Command::Key(_)
            | Command::Tag(_)
            | Command::Copy(_)
            | Command::Mount(_)
    ) {
        // SAFETY: changing a signal disposition to "ignore".
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    }
    match &cli.command {
        Command::Init(a) => init::run(g, a),
        Command::Backup(a) => backup::run(g, a),
        Command::Snapshots(a) => snapshots::run(g, a),
        Command::Ls(a) => ls::run(g, a),
        Command::Restore(a) => restore::run(g, a),
        Command::Drill(a) => drill::run(g, a),
        Command::Dump(a) => dump::run(g, a),
        Command::Diff(a) => diff::run(g, a),
        Command::Find(a) => find::run(g, a),
        Command::Cat(a) => cat::run(g, a),
        Command::Check(a) => check::run(g, a),
        Command::Forget(a) => forget::run(g, a),
        Command::Prune(a) => prune::run(g, a),
        Command::Unlock(a) => unlock::run(g, a),
        Command::Tag(a) => tag::run(g, a),
        Command::Copy(a) => copy::run(g, a),
        Command::Mount(a) => mount::run(g, a),
        Command::Stats(a) => stats::run(g, a),
        Command::Repair(a) => repair::run(g, a),
        Command::Key(a) => key::run(g, a),
        Command::Serve(a) => serve::run(g, a),
        Command::Generate(a) => generate::run(g, a),
        Command::Cache(a) => cache::run(g, a),
        Command::Version => version(g),
    }
}

/// What `cairn version` says (and `--json` gives as fields).
fn version(g: &GlobalArgs) -> Result<i32> {
    let info = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": option_env!("CAIRN_COMMIT").unwrap_or("unknown"),
        "target": format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        "format_version": cairn::config::REPO_VERSION,
        "storage": ["local", "s3", "swift", "memory"],
    });
    if g.json {
        println!("{info}");
    } else {
        println!(
            "cairn {} (commit {}, {}, repository format {}; storage: local, s3, swift, memory)",
            info["version"].as_str().unwrap_or(""),
            info["commit"].as_str().unwrap_or(""),
            info["target"].as_str().unwrap_or(""),
            info["format_version"]
        );
    }
    Ok(0)
}

fn exit_code_of(e: &anyhow::Error) -> i32 {
    e.chain()
        .find_map(|c| c.downcast_ref::<Fail>())
        .map_or(1, Fail::exit_code)
}
