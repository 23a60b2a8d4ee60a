use super::render::{bytes, parse_time};
use super::GlobalArgs;
use anyhow::{anyhow, Context, Result};
use cairn::backup::archiver::ChangeDetection;
use cairn::backup::progress::Progress;
use cairn::backup::{
    backup, BackupOptions, BackupOutcome, ParentChoice, StreamInput, StreamSource,
};
use cairn::hooks::around_backup;
use cairn::notify::{Event, EventKind, Notifier};
use cairn::settings::{Settings, SourceSettings};
use cairn::source::exclude::{Patterns, CACHEDIR_TAG};
use cairn::source::list_file::{read_paths, ListForm};
use cairn::storage::RequestTally;
use cairn::Id;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

#[derive(clap::Args)]
pub struct BackupArgs {
    /// Files and directories to back up
    paths: Vec<PathBuf>,
    /// Back up the paths listed in FILE, one per line (`#` comments,
    /// blank lines skipped; `-`: standard input) (repeatable)
    #[arg(long = "files-from", value_name = "FILE")]
    files_from: Vec<PathBuf>,
    /// Like --files-from, each line exactly as written (repeatable)
    #[arg(long = "files-from-verbatim", value_name = "FILE")]
    files_from_verbatim: Vec<PathBuf>,
    /// Like --files-from, NUL-separated (`find -print0`) (repeatable)
    #[arg(long = "files-from-raw", value_name = "FILE")]
    files_from_raw: Vec<PathBuf>,
    /// Leave out entries matching PATTERN (repeatable): `/` at the start
    /// anchors it at the root, otherwise it matches at any depth; `dir/`
    /// matches directories only; `!PATTERN` takes an exclusion back
    #[arg(long = "exclude", short = 'e', value_name = "PATTERN")]
    excludes: Vec<String>,
    /// Like --exclude, ignoring case
    #[arg(long = "iexclude", value_name = "PATTERN")]
    iexcludes: Vec<String>,
    /// Read exclude patterns from FILE, one per line (repeatable)
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_files: Vec<PathBuf>,
    /// Read patterns from FILE, matched ignoring case (repeatable)
    #[arg(long = "iexclude-file", value_name = "FILE")]
    iexclude_files: Vec<PathBuf>,
    /// Leave out directories holding a valid CACHEDIR.TAG
    #[arg(long)]
    exclude_caches: bool,
    /// Leave out directories holding a file NAME (NAME:HEADER: whose
    /// content starts with HEADER) (repeatable)
    #[arg(long = "exclude-if-present", value_name = "NAME[:HEADER]")]
    exclude_if_present: Vec<String>,
    /// Leave out files larger than SIZE (e.g. 500M, 2G)
    #[arg(long, value_name = "SIZE", value_parser = cairn::size::parse_size)]
    exclude_larger_than: Option<u64>,
    /// Do not cross file-system boundaries
    #[arg(long, short = 'x')]
    one_file_system: bool,
    /// Tag the snapshot (repeatable; "a,b" adds both)
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Host name recorded in the snapshot (default: this machine's)
    #[arg(long, short = 'H')]
    host: Option<String>,
    /// Compare with this snapshot instead of the latest of the same host and paths
    #[arg(long)]
    parent: Option<String>,
    /// Read every file, even those unchanged since the parent snapshot
    #[arg(long)]
    force: bool,
    /// Treat a changed inode number as unchanged (btrfs/LVM snapshots)
    #[arg(long)]
    ignore_inode: bool,
    /// Treat a changed ctime as unchanged
    #[arg(long)]
    ignore_ctime: bool,
    /// Show what would be added, store nothing
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Snapshot time: "YYYY-MM-DD HH:MM:SS" (local) or RFC 3339
    #[arg(long)]
    time: Option<String>,
    /// zstd level for this backup (default: the repository's)
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=22))]
    compression: Option<i32>,
    /// Back up standard input as one file (beside any PATHs)
    #[arg(long, conflicts_with = "stdin_from_command")]
    stdin: bool,
    /// Back up the standard output of the command given after `--` as one
    /// file; if the command fails, no snapshot is saved
    #[arg(long, requires = "command")]
    stdin_from_command: bool,
    /// Name of the file holding the stream in the snapshot
    #[arg(long, default_value = "stdin")]
    stdin_filename: String,
    /// The settings file (TOML) that defines --source
    #[arg(long, requires = "source", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Back up this source of the settings file: its paths, command
    /// streams, excludes, tags and hooks (and its repository, unless -r)
    #[arg(long, requires = "config", value_name = "NAME")]
    source: Option<String>,
    /// The command whose output --stdin-from-command stores
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(g: &GlobalArgs, a: &BackupArgs) -> Result<i32> {
    let Some((config, source_name)) = a.config.as_ref().zip(a.source.as_ref()) else {
        return run_backup(g, a, None).map(|(code, _)| code);
    };
    let settings = Settings::load(config)?;
    let source = settings.source(source_name)?;
    let g = &with_repository_of(g, &settings, source)?;
    // the same events a job of `serve` sends, so a source run by cron or
    // by hand is watched the same way
    let notifier = Notifier::new(settings.notifications.clone());
    let mut event = Event::new(EventKind::Start, "backup");
    event.source = Some(source_name.clone());
    event.repository = Some(source.repository.clone());
    let outcome = notifier.around(
        &event,
        NOTIFY_WAIT,
        || {
            around_backup(source_name, source, || {
                run_backup(g, a, Some(source)).map(|(code, id)| ((code, id), id))
            })
        },
        |(_, id)| id.map(|id| id.to_hex()),
    );
    outcome.map(|(code, _)| code)
}

/// How long a backup run by hand waits for its notifications to go out.
pub(super) const NOTIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// A configured source names its repository; -r and the CAIRN_* variables
/// still win, so a person can point a source at a test repository.
pub(super) fn with_repository_of(
    g: &GlobalArgs,
    settings: &Settings,
    source: &SourceSettings,
) -> Result<GlobalArgs> {
    let mut g = g.clone();
    if g.repo.is_some() {
        return Ok(g);
    }
    let repo = settings.repository(&source.repository)?;
    g.repo = Some(repo.url.clone());
    if g.password_file.is_none() && g.password_command.is_none() {
        g.password_file = repo.password_file.clone();
        g.password_command = repo.password_command.clone();
    }
    let given: Vec<String> = g.options.iter().map(|(k, _)| k.clone()).collect();
    for (k, v) in repo.storage_options()? {
        if !given.contains(&k) {
            g.options.push((k, v));
        }
    }
    if g.cache_dir.is_none() {
        g.cache_dir = repo.cache_dir.clone();
    }
    Ok(g)
}

/// Runs the backup and prints its summary: the exit code, and the id of
/// the snapshot saved (none in a dry run).
fn run_backup(
    g: &GlobalArgs,
    a: &BackupArgs,
    source: Option<&SourceSettings>,
) -> Result<(i32, Option<Id>)> {
    let mut opts = backup_options(a, source)?;
    if a.stdin {
        // before the key derivation, so the producer can write meanwhile
        cairn::source::pipe::enlarge(std::io::stdin());
    }
    let repo = g.open()?;
    let interrupted = super::interrupt_flag()?;
    let progress = Progress::default();
    let stop_display = AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| {
        let display = super::progress::show(scope, g, &progress, &stop_display, "files");
        opts.count_totals = display.is_shown();
        backup(&repo, &opts, &interrupted, &progress)
    })
    .context("backup failed")?;
    render(g, &outcome, repo.storage.requests());
    let code = if outcome.is_incomplete() { 3 } else { 0 };
    Ok((code, outcome.snapshot_id))
}

/// The command line, joined with the configured source (if any): paths,
/// streams, excludes and tags add up; a host given here wins.
fn backup_options(a: &BackupArgs, source: Option<&SourceSettings>) -> Result<BackupOptions> {
    let mut opts = source
        .map(BackupOptions::of_source)
        .transpose()?
        .unwrap_or_default();
    opts.paths.extend(a.paths.iter().cloned());
    let lists = [&a.files_from, &a.files_from_verbatim, &a.files_from_raw];
    if a.stdin && lists.iter().any(|l| l.iter().any(|f| f.as_os_str() == "-")) {
        return Err(anyhow!(
            "--stdin and a path list read from `-` cannot share standard input"
        ));
    }
    for (files, form) in [
        (&a.files_from, ListForm::Lines),
        (&a.files_from_verbatim, ListForm::Verbatim),
        (&a.files_from_raw, ListForm::Raw),
    ] {
        for f in files {
            let listed = read_paths(f, form)?;
            for pattern in &listed.unmatched {
                eprintln!(
                    "warning: {}: {pattern:?} matches no file: skipped",
                    f.display()
                );
            }
            opts.paths.extend(listed.paths);
        }
    }
    let ex = &mut opts.excludes;
    ex.patterns.extend(a.excludes.iter().cloned());
    for f in &a.exclude_files {
        ex.patterns.extend(Patterns::read_file(f)?);
    }
    ex.ipatterns.extend(a.iexcludes.iter().cloned());
    for f in &a.iexclude_files {
        ex.ipatterns.extend(Patterns::read_file(f)?);
    }
    ex.if_present.extend(a.exclude_if_present.iter().cloned());
    if a.exclude_caches {
        ex.if_present.push(CACHEDIR_TAG.to_string());
    }
    if a.exclude_larger_than.is_some() {
        ex.larger_than = a.exclude_larger_than;
    }
    let tags = a
        .tags
        .iter()
        .flat_map(|t| t.split(','))
        .filter(|t| !t.is_empty());
    opts.snapshot.tags.extend(tags.map(String::from));
    let stream_name = || a.stdin_filename.clone();
    if a.stdin {
        opts.streams.push(StreamSource {
            name: stream_name(),
            input: StreamInput::Stdin,
        });
    }
    if a.stdin_from_command {
        opts.streams.push(StreamSource {
            name: stream_name(),
            input: StreamInput::Command(a.command.clone()),
        });
    } else if !a.command.is_empty() {
        return Err(anyhow!(
            "a command after `--` needs --stdin-from-command (got `{}`)",
            a.command.join(" ")
        ));
    }
    if a.host.is_some() {
        opts.snapshot.host = a.host.clone();
    }
    opts.one_file_system |= a.one_file_system;
    opts.parent = match (&a.parent, a.force) {
        (_, true) => ParentChoice::None,
        (Some(p), false) => ParentChoice::Explicit(p.clone()),
        (None, false) => ParentChoice::Auto,
    };
    opts.detection = ChangeDetection {
        ignore_inode: a.ignore_inode,
        ignore_ctime: a.ignore_ctime,
    };
    opts.snapshot.time_ns = a.time.as_deref().map(parse_time).transpose()?;
    opts.snapshot.dry_run = a.dry_run;
    opts.snapshot.compression_level = a.compression;
    Ok(opts)
}

fn render(g: &GlobalArgs, o: &BackupOutcome, requests: RequestTally) {
    let s = &o.snapshot.summary;
    let secs = (s.end_ns - s.start_ns) as f64 / 1e9;
    if g.json {
        println!("{}", super::render::message("summary", &o.report(requests)));
        return;
    }
    if g.quiet {
        return;
    }
    println!(
        "files: {} new, {} changed, {} unmodified; {} dirs",
        s.files_new, s.files_changed, s.files_unmodified, s.dirs
    );
    if o.files_reread > 0 {
        println!(
            "{} unchanged files were read again: the repository had lost their content \
             (this snapshot holds it again)",
            o.files_reread
        );
    }
    println!(
        "added to the repository: {} ({} stored) in {} blobs, {} packs; processed {} in {:.2}s",
        bytes(s.data_added),
        bytes(s.data_added_packed),
        s.blobs_added,
        o.packs_written,
        bytes(s.bytes_processed),
        secs
    );
    println!(
        "storage requests: {} PUT, {} GET, {} LIST, {} HEAD, {} DELETE",
        requests.put, requests.get, requests.list, requests.head, requests.delete
    );
    match o.snapshot_id {
        Some(id) => println!("snapshot {} saved", id.short()),
        None => println!("dry run: nothing was stored"),
    }
    if !s.errors.is_empty() {
        eprintln!(
            "{} entries could not be read and are missing from the snapshot (see warnings above)",
            s.errors.len()
        );
    }
}
