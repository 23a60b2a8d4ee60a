use super::render::{bytes, message};
use super::GlobalArgs;
use anyhow::Result;
use cairn::backup::progress::Progress;
use cairn::drill::{drill, DrillRun};
use cairn::notify::{Event, EventKind, Notifier};
use cairn::settings::Settings;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

#[derive(clap::Args)]
pub struct DrillArgs {
    /// The drill of the settings file to run
    name: String,
    /// The settings file that defines the drill and its source
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Where the scratch directory goes (default: the system's temporary
    /// directory)
    #[arg(long, value_name = "DIR")]
    scratch_dir: Option<PathBuf>,
}

pub fn run(g: &GlobalArgs, a: &DrillArgs) -> Result<i32> {
    let settings = Settings::load(&a.config)?;
    let settings_of_drill = settings.drill(&a.name)?;
    let source = settings.source(&settings_of_drill.source)?;
    let g = &super::backup::with_repository_of(g, &settings, source)?;
    let notifier = Notifier::new(settings.notifications.clone());
    let mut event = Event::new(EventKind::Start, "drill");
    event.source = Some(settings_of_drill.source.clone());
    event.repository = Some(source.repository.clone());
    let scratch_parent = a.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    let report = notifier.around(
        &event,
        super::backup::NOTIFY_WAIT,
        || {
            let repo = g.open()?;
            let never = AtomicBool::new(false);
            let progress = Progress::default();
            let run = DrillRun {
                scratch_parent: &scratch_parent,
                cancel: &never,
                progress: &progress,
            };
            drill(&repo, &a.name, settings_of_drill, source, &run)
        },
        |r| Some(r.snapshot_id.clone()),
    )?;
    if g.json {
        println!("{}", message("summary", &report));
    } else if !g.quiet {
        for r in &report.restored {
            println!("recovered {} into {} (removed again)", r.from, r.into);
        }
        println!(
            "drill {} passed: snapshot {} of source {} recovered{} ({})",
            report.drill,
            &report.snapshot_id[..8],
            report.source,
            if report.verified_by_command {
                " and verified by its command"
            } else {
                ""
            },
            bytes(report.bytes)
        );
    }
    Ok(0)
}
