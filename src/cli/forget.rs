use super::prune::{prune, PruneArgs};
use super::render::local_time;
use super::{FilterArgs, GlobalArgs};
use anyhow::Result;
use cairn::repo::lock::LockKind;
use cairn::retention::forget::{ForgetOptions, GroupBy};
use cairn::retention::policy::{KeepPolicy, Within};

#[derive(clap::Args)]
pub struct ForgetArgs {
    /// Snapshots to forget in any case (ids, prefixes or `latest`)
    snapshots: Vec<String>,
    /// Keep the last N snapshots (-1: all)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_last: Option<i64>,
    /// Keep the last snapshot of each of the last N hours (-1: every hour)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_hourly: Option<i64>,
    /// Keep the last snapshot of each of the last N days (-1: every day)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_daily: Option<i64>,
    /// Keep the last snapshot of each of the last N ISO weeks (-1: every week)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_weekly: Option<i64>,
    /// Keep the last snapshot of each of the last N months (-1: every month)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_monthly: Option<i64>,
    /// Keep the last snapshot of each of the last N years (-1: every year)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_yearly: Option<i64>,
    /// Keep snapshots newer than DURATION before the newest (e.g. 1y6m7d12h; m = months)
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<Within>,
    /// Keep snapshots with these tags (repeatable; "a,b" needs both)
    #[arg(long = "keep-tag", value_name = "TAGS")]
    keep_tags: Vec<String>,
    /// Apply the policy to each group of snapshots with equal host, paths and/or tags
    #[arg(long, default_value = "host,paths")]
    group_by: GroupBy,
    /// Show what would be forgotten, change nothing
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Run prune afterwards
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_args: PruneArgs,
    #[command(flatten)]
    filter: FilterArgs,
}

impl ForgetArgs {
    fn policy(&self) -> Result<KeepPolicy> {
        let policy = KeepPolicy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.keep_within,
            tags: KeepPolicy::tag_sets(&self.keep_tags),
        };
        policy
            .check_counts()
            .map_err(|bad| anyhow::anyhow!(bad.message(&format!("--keep-{}", bad.rule))))?;
        Ok(policy)
    }
}

pub fn run(g: &GlobalArgs, a: &ForgetArgs) -> Result<i32> {
    let repo = g.open_locked(LockKind::Exclusive, "forget")?;
    let filter = a.filter.filter();
    let remove = a
        .snapshots
        .iter()
        .map(|spec| Ok(repo.find_snapshot(spec, &filter)?.0))
        .collect::<Result<Vec<_>>>()?;
    let opts = ForgetOptions {
        policy: a.policy()?,
        group_by: Some(a.group_by),
        remove,
        filter,
    };
    if opts.policy.is_empty() && opts.remove.is_empty() && !g.json {
        eprintln!("no policy and no snapshots given: nothing is forgotten");
    }
    let report = cairn::ops::forget(&repo, &opts, a.dry_run, |plan| {
        if !g.json && !g.quiet {
            print_forget_plan(plan);
        }
    })?;
    if g.json {
        println!("{}", serde_json::to_string(&report.groups)?);
    } else if !g.quiet {
        let n = report.removed.len();
        if a.dry_run {
            println!("would remove {n} snapshots (dry run)");
        } else {
            println!("removed {n} snapshots");
        }
    }
    if a.prune {
        prune(g, &repo, &a.prune_args, a.dry_run)?;
    }
    Ok(0)
}

fn print_forget_plan(plan: &cairn::retention::forget::ForgetPlan) {
    for (id, s) in &plan.explicit {
        println!("remove {} {} (named)", id.short(), local_time(s.time_ns));
    }
    for grp in &plan.groups {
        let mut what = Vec::new();
        if let Some(h) = &grp.key.host {
            what.push(format!("host {h}"));
        }
        if let Some(p) = &grp.key.paths {
            what.push(format!("paths {}", p.join(" ")));
        }
        if let Some(t) = &grp.key.tags {
            what.push(format!("tags [{}]", t.join(",")));
        }
        println!("snapshots of {}:", what.join(", "));
        for (d, s) in &grp.decisions {
            println!(
                "  {} {}  {}  {}",
                if d.keep { "keep  " } else { "remove" },
                d.id.short(),
                local_time(s.time_ns),
                d.matches.join(", ")
            );
        }
    }
}
