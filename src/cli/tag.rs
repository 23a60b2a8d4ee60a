use super::render::message;
use super::{FilterArgs, GlobalArgs};
use anyhow::Result;
use cairn::repo::lock::LockKind;
use cairn::repo::tags::TagChange;

#[derive(clap::Args)]
pub struct TagArgs {
    /// Snapshots to change (ids, prefixes or `latest`); default: every
    /// snapshot the --host/--tag/--path filters select
    snapshots: Vec<String>,
    /// Add these tags (repeatable; "a,b" adds both)
    #[arg(long = "add", value_name = "TAG")]
    add: Vec<String>,
    /// Remove these tags (repeatable)
    #[arg(long = "remove", value_name = "TAG")]
    remove: Vec<String>,
    /// Replace all tags by these (repeatable; --set "" removes all)
    #[arg(long = "set", value_name = "TAG", conflicts_with_all = ["add", "remove"])]
    set: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

fn split(tags: &[String]) -> Vec<String> {
    tags.iter()
        .flat_map(|t| t.split(','))
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

pub fn run(g: &GlobalArgs, a: &TagArgs) -> Result<i32> {
    let change = TagChange {
        set: (!a.set.is_empty()).then(|| split(&a.set)),
        add: split(&a.add),
        remove: split(&a.remove),
    };
    if change.is_empty() {
        return Err(anyhow::anyhow!(
            "nothing to change: give --add, --remove or --set"
        ));
    }
    let repo = g.open_locked(LockKind::Exclusive, "tag")?;
    let filter = a.filter.filter();
    let ids: Vec<cairn::Id> = repo
        .named_or_selected(&a.snapshots, &filter)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let done = repo.retag(&ids, &change)?;
    if g.json {
        println!(
            "{}",
            message("tag", &serde_json::json!({ "changed": done }))
        );
    } else if !g.quiet {
        for r in &done {
            println!(
                "{} → {}: [{}]",
                &r.old_id[..8],
                &r.new_id[..8],
                r.tags.join(", ")
            );
        }
        println!("{} of {} snapshots changed", done.len(), ids.len());
    }
    Ok(0)
}
