use super::dump::write_dump;
use super::render::{bytes, message};
use super::{FilterArgs, GlobalArgs};
use anyhow::{anyhow, Result};
use cairn::backup::progress::Progress;
use cairn::restore::{MetadataChoices, Overwrite, RestoreOptions, Selection, XattrChoice};
use cairn::service::ServiceRestoreOptions;
use cairn::settings::Settings;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// SNAPSHOT or SNAPSHOT:SUBPATH (the contents of SUBPATH land in the target)
    snapshot: String,
    /// Directory to restore into
    /// (With --source: the file a sqlite or redis backup is restored as.)
    #[arg(long, short = 't', required_unless_present_any = ["to_command", "source"])]
    target: Option<PathBuf>,
    /// Write SNAPSHOT:PATH (a file as is, a directory as tar) to the standard
    /// input of the command given after `--`, e.g. `-- psql app`
    #[arg(long, requires = "command", conflicts_with_all = ["target", "includes", "excludes", "verify", "dry_run"])]
    to_command: bool,
    /// The command --to-command feeds
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
    /// Restore only these paths or patterns (repeatable)
    #[arg(long = "include", short = 'i')]
    includes: Vec<String>,
    /// Do not restore these paths or patterns (repeatable)
    #[arg(long = "exclude", short = 'e')]
    excludes: Vec<String>,
    /// Read every restored file back and check it against the snapshot
    #[arg(long)]
    verify: bool,
    /// Show what would be restored, write nothing
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Existing files: always (write again), if-changed (unless the content
    /// already matches; the default), if-newer (only if the snapshot's is
    /// newer), never (leave them, metadata included)
    #[arg(long, default_value = "if-changed", value_name = "MODE")]
    overwrite: cairn::restore::Overwrite,
    /// Remove what the restored directories hold that the snapshot does not
    /// (never outside the target; not with --include/--exclude)
    #[arg(long, conflicts_with_all = ["includes", "excludes"])]
    delete: bool,
    /// Leave ownership alone: entries belong to whoever restores (a root
    /// restore otherwise gives them the snapshot's owners; setuid and setgid
    /// bits are kept only with the owner). With --source postgres: leave
    /// ownership and privileges out of the database.
    #[arg(long)]
    no_owner: bool,
    /// Do not create device nodes and fifos
    #[arg(long)]
    no_special: bool,
    /// Restore no extended attributes
    #[arg(long)]
    no_xattrs: bool,
    /// Restore only the extended attributes whose name matches, e.g.
    /// 'user.*' (repeatable)
    #[arg(long, value_name = "PATTERN", conflicts_with = "no_xattrs")]
    xattr_include: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    service: ServiceArgs,
}

/// Recovery of a data service into a new instance.
#[derive(clap::Args)]
#[command(next_help_heading = "Data services")]
struct ServiceArgs {
    /// The settings file that defines --source
    #[arg(long, requires = "source", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Restore this data-service source (postgres, mysql, sqlite, redis)
    /// into a new database (or, for sqlite and redis, the --target file)
    #[arg(long, requires = "config", value_name = "NAME",
          conflicts_with_all = ["to_command", "includes", "excludes", "verify", "delete", "dry_run"])]
    source: Option<String>,
    /// Which database of the snapshot (needed when it holds several)
    #[arg(long, requires = "source", value_name = "NAME")]
    database: Option<String>,
    /// The database to create (default: the one backed up); an existing
    /// one is refused unless --overwrite always
    #[arg(long, requires = "source", value_name = "NAME")]
    target_database: Option<String>,
    /// Restore only this table, SCHEMA.TABLE or TABLE (postgres; repeatable)
    #[arg(long = "table", requires = "source", value_name = "TABLE")]
    tables: Vec<String>,
    /// Restore to this server instead of the source's (its own syntax)
    #[arg(long, requires = "source", value_name = "CONNECTION")]
    connection: Option<String>,
    /// Restore the roles (postgres) or users and grants (mariadb) first
    #[arg(long, requires = "source")]
    globals: bool,
}

pub fn run(g: &GlobalArgs, a: &RestoreArgs) -> Result<i32> {
    if let Some((config, source)) = a.service.config.as_ref().zip(a.service.source.as_ref()) {
        return run_service(g, a, config, source);
    }
    let (spec, subpath) = match a.snapshot.split_once(':') {
        Some((s, p)) => (s, Some(p.to_string())),
        None => (a.snapshot.as_str(), None),
    };
    let (repo, (id, snap)) = g.open_picking(|listed| listed.find(spec, &a.filter.filter()))?;
    let Some(target) = &a.target else {
        let path = subpath.ok_or_else(|| {
            anyhow!(
                "--to-command needs the path of what to send: SNAPSHOT:PATH, e.g. latest:/db.sql"
            )
        })?;
        cairn::source::command::feed_command(&a.command, |stdin| {
            write_dump(&repo, &snap, &path, stdin)
        })?;
        return Ok(0);
    };
    let opts = RestoreOptions {
        target: target.clone(),
        subpath,
        selection: Selection {
            includes: a.includes.clone(),
            excludes: a.excludes.clone(),
        },
        dry_run: a.dry_run,
        overwrite: a.overwrite,
        delete: a.delete,
        metadata: MetadataChoices {
            owner: !a.no_owner,
            special: !a.no_special,
            xattrs: XattrChoice::chosen(a.no_xattrs, &a.xattr_include)?,
        },
    };
    let never = AtomicBool::new(false);
    let progress = Progress::default();
    let stop_display = AtomicBool::new(false);
    let report = std::thread::scope(|scope| {
        let _display = super::progress::show(scope, g, &progress, &stop_display, "files");
        cairn::ops::restore(&repo, (id, snap.tree), &opts, a.verify, (&never, &progress))
    })?;
    let out = &report.outcome;
    if g.json {
        println!("{}", message("summary", &report));
    } else if !g.quiet {
        println!(
            "{} snapshot {} to {}: {} files ({} skipped), {} dirs, {} other entries, {} written",
            if a.dry_run {
                "would restore"
            } else {
                "restored"
            },
            id.short(),
            target.display(),
            out.files_restored,
            out.files_skipped,
            out.dirs,
            out.other_entries,
            bytes(out.bytes_written)
        );
        if a.delete {
            println!("deleted {} entries the snapshot does not have", out.deleted);
        }
    }
    if out.errors.is_empty() {
        return Ok(0);
    }
    for e in &out.errors {
        eprintln!("error: {e}");
    }
    Err(anyhow!(
        "{} problems during restore (listed above); everything else was restored",
        out.errors.len()
    ))
}

/// `restore --config F --source NAME`: a data service into a new database
/// or file.
fn run_service(g: &GlobalArgs, a: &RestoreArgs, config: &Path, name: &str) -> Result<i32> {
    let settings = Settings::load(config)?;
    let source = settings.source(name)?;
    let service = source.service().ok_or_else(|| {
        anyhow!(
            "source {name:?} is not a data service: restore it with --target DIR, without --source"
        )
    })?;
    let g = &super::backup::with_repository_of(g, &settings, source)?;
    let given = a.filter.filter();
    let filter = if given.hosts.is_empty() && given.tags.is_empty() && given.paths.is_empty() {
        cairn::ops::source_filter(source)
    } else {
        given
    };
    let (repo, (id, snap)) = g.open_picking(|listed| listed.find(&a.snapshot, &filter))?;
    let s = &a.service;
    let opts = ServiceRestoreOptions {
        database: s.database.clone(),
        target_database: s.target_database.clone(),
        target: a.target.clone(),
        tables: s.tables.clone(),
        connection: s.connection.clone(),
        replace: a.overwrite == Overwrite::Always,
        globals: s.globals,
        no_owner: a.no_owner,
    };
    let report = service.restore(&repo, snap.tree, &opts)?;
    if g.json {
        println!("{}", message("summary", &report));
    } else if !g.quiet {
        println!(
            "restored {} of snapshot {} into {}{} ({})",
            report.from,
            id.short(),
            report.into,
            if report.replaced {
                ", replacing it"
            } else {
                ""
            },
            bytes(report.bytes)
        );
    }
    Ok(0)
}
