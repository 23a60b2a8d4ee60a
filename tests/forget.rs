//! `forget` keeps exactly what restic keeps: the same timeline of snapshots
//! is made in a restic and a cairn repository (`backup --time`), and every
//! policy is applied by both (dry runs, JSON), group by group.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};

/// One snapshot of the timeline: host, time (UTC), tags. Each gets a unique
/// tag `sN` so the two tools' snapshots can be matched.
struct Planned {
    host: &'static str,
    time: String,
    tags: Vec<String>,
}

/// ~2.5 years of irregular backups: bursts within an hour and a day, gaps of
/// weeks, two hosts, and some snapshots tagged `important`.
fn timeline() -> Vec<Planned> {
    let mut out = Vec::new();
    let mut t: i64 = 1_640_995_200 + 7 * 3600; // 2022-01-01 07:00 UTC
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..30 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // gaps: minutes, hours, days or weeks
        let gap = match seed % 5 {
            0 => 600 + (seed >> 8) % 3000,
            1 => 3600 * (1 + (seed >> 8) % 20),
            2 => 86_400 * (1 + (seed >> 8) % 6),
            _ => 86_400 * (7 + (seed >> 8) % 60),
        };
        t += gap as i64;
        let ts = jiff::Timestamp::from_second(t).unwrap();
        let mut tags = vec![format!("s{i}")];
        if i % 7 == 3 {
            tags.push("important".into());
        }
        out.push(Planned {
            host: if i % 4 == 1 { "other" } else { "main" },
            time: ts.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            tags,
        });
    }
    out
}

/// host → the `sN` tags of the kept snapshots, from either tool's JSON.
fn kept_by_host(json: &str) -> BTreeMap<String, BTreeSet<String>> {
    let groups: serde_json::Value = serde_json::from_str(json).unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for g in groups.as_array().unwrap() {
        let host = g["host"].as_str().unwrap_or("").to_string();
        let kept = out.entry(host).or_default();
        for s in g["keep"].as_array().into_iter().flatten() {
            for tag in s["tags"].as_array().unwrap() {
                let tag = tag.as_str().unwrap();
                if tag.starts_with('s') {
                    kept.insert(tag.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn forget_keeps_exactly_what_restic_keeps() {
    let env = Env::new();
    env.init();
    restic(&env, &["init"]);
    let src = env.path("data");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"same content for every snapshot").unwrap();
    let src = src.to_str().unwrap();
    for p in timeline() {
        let mut args = vec!["backup", "--host", p.host, "--time", &p.time];
        for t in &p.tags {
            args.extend(["--tag", t]);
        }
        args.push(src);
        env.ok(&args);
        restic(&env, &args);
    }
    // Counts are chosen so each rule runs out before the oldest snapshot of
    // a group: restic 0.14 (Debian's) predates 0.16's "keep the oldest when
    // counts are left" rule, which cairn follows (see the policy unit tests).
    let policies: &[&[&str]] = &[
        &["--keep-last", "3"],
        &[
            "--keep-daily",
            "4",
            "--keep-weekly",
            "3",
            "--keep-monthly",
            "4",
        ],
        &["--keep-monthly", "5", "--keep-yearly", "1"],
        &["--keep-hourly", "3", "--keep-within", "2m"],
        &["--keep-within", "1y2m10d"],
        &["--keep-within", "36h", "--keep-weekly", "2"],
        &["--keep-tag", "important", "--keep-last", "2"],
        &["--keep-weekly", "6", "--group-by", "host"],
        &["--keep-daily", "5", "--group-by", ""],
    ];
    for policy in policies {
        let mut args = vec!["forget", "--dry-run", "--json"];
        args.extend_from_slice(policy);
        let ours = kept_by_host(&env.ok(&args));
        let theirs = kept_by_host(&restic(&env, &args));
        assert!(!ours.is_empty(), "{policy:?}: no groups");
        assert_eq!(
            ours, theirs,
            "policy {policy:?}: cairn (left) and restic differ"
        );
    }
    // dry runs changed nothing
    assert_eq!(env.snapshot_ids().len(), 30);
}

#[test]
fn forget_removes_by_policy_or_by_id_and_says_why_it_keeps() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let src = src.to_str().unwrap();
    for (day, tag) in [(1, "a"), (2, "keepme"), (3, "b"), (4, "c"), (5, "d")] {
        let time = format!("2024-03-0{day} 12:00:00");
        env.ok(&["backup", "--time", &time, "--tag", tag, src]);
    }
    let all = env.snapshot_ids(); // oldest first
    let out = env.ok(&[
        "forget",
        "--json",
        "--keep-last",
        "2",
        "--keep-tag",
        "keepme",
    ]);
    let groups: serde_json::Value = serde_json::from_str(&out).unwrap();
    let reasons = groups[0]["reasons"].as_array().unwrap();
    let why: BTreeMap<String, Vec<String>> = reasons
        .iter()
        .map(|r| {
            (
                r["snapshot"]["tags"][0].as_str().unwrap().to_string(),
                r["matches"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(why.len(), 3);
    assert_eq!(why["keepme"], vec!["has tags keepme"]);
    assert_eq!(why["d"], vec!["last snapshot"]);
    assert_eq!(why["c"], vec!["last snapshot"]);
    assert_eq!(
        env.snapshot_ids(),
        vec![all[1].clone(), all[3].clone(), all[4].clone()]
    );
    // by id (prefix): exactly that one goes
    env.ok(&["forget", &all[3][..8]]);
    assert_eq!(env.snapshot_ids(), vec![all[1].clone(), all[4].clone()]);

    // no policy and no ids: nothing happens
    let out = env.cairn().args(["forget"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(env.snapshot_ids().len(), 2);
}

#[test]
fn bad_forget_arguments_are_refused_with_a_reason() {
    let env = Env::new();
    env.init();
    for (args, needle) in [
        (&["forget", "--keep-within", "3w"][..], "1y6m7d12h"),
        (&["forget", "--group-by", "hosts"], "unknown field"),
        (
            &["forget", "--keep-last", "-2"],
            "--keep-last = -2: give a count",
        ),
        (&["forget", "deadbeef"], "deadbeef"),
    ] {
        let out = env.cairn().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
