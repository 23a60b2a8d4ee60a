//! `cairn find` over many snapshots and `cairn tag`, end to end.

mod common;

use common::*;
use serde_json::{json, Value};

fn json(env: &Env, args: &[&str]) -> Value {
    let out = env.ok(args);
    last_json(&out)
}

#[test]
fn find_lists_every_match_per_snapshot() {
    let env = Env::new();
    env.init();
    let root = env.path("data");
    std::fs::create_dir_all(root.join("etc/app")).unwrap();
    std::fs::write(root.join("etc/app/main.conf"), "a").unwrap();
    std::fs::write(root.join("etc/app/notes.txt"), "b").unwrap();
    set_mtime(&root.join("etc/app/main.conf"), 1_600_000_000, 0);
    env.ok(&["backup", root.to_str().unwrap()]);
    std::fs::write(root.join("etc/Extra.CONF"), "c").unwrap();
    set_mtime(&root.join("etc/Extra.CONF"), 1_700_000_000, 0);
    env.ok(&["backup", root.to_str().unwrap()]);
    std::fs::remove_file(root.join("etc/app/main.conf")).unwrap();
    env.ok(&["backup", root.to_str().unwrap()]);
    let ids = env.snapshot_ids();
    let base = root.display().to_string();

    let hits = |args: &[&str]| -> Vec<(String, Vec<String>)> {
        let mut all = vec!["find", "--json"];
        all.extend(args);
        json(&env, &all)
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let paths = s["matches"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["path"].as_str().unwrap().replace(&base, ""))
                    .collect();
                (s["snapshot"].as_str().unwrap().to_string(), paths)
            })
            .collect()
    };
    assert_eq!(
        hits(&["*.conf"]),
        [
            (ids[0].clone(), vec!["/etc/app/main.conf".to_string()]),
            (ids[1].clone(), vec!["/etc/app/main.conf".to_string()]),
        ],
        "the third snapshot has no .conf left (Extra.CONF differs in case)"
    );
    let any_case = hits(&["-i", "*.conf"]);
    assert_eq!(any_case.len(), 3);
    assert_eq!(any_case[1].1, ["/etc/Extra.CONF", "/etc/app/main.conf"]);
    // a path pattern, one snapshot only
    let one = hits(&["--snapshot", &ids[2], &format!("{base}/etc/*/*.txt")]);
    assert_eq!(
        one,
        [(ids[2].clone(), vec!["/etc/app/notes.txt".to_string()])]
    );
    // modification times bound the entries
    let newer = hits(&["-i", "--oldest", "2021-01-01T00:00:00Z", "*.conf"]);
    assert!(
        newer.iter().all(|(_, p)| p == &["/etc/Extra.CONF"]),
        "{newer:?}"
    );
    let text = env.ok(&["find", "notes.txt"]);
    assert_eq!(
        text.matches("Found matching entries in snapshot").count(),
        3,
        "{text}"
    );
    // a bad pattern is named
    let out = env.cairn().args(["find", "a["]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"a[\""));
}

#[test]
fn tags_change_by_rewriting_the_snapshot() {
    let env = Env::new();
    env.init();
    let root = env.path("data");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("f"), noise(100_000, 5)).unwrap();
    env.ok(&["backup", root.to_str().unwrap(), "--tag", "daily"]);
    env.ok(&["backup", root.to_str().unwrap(), "--tag", "daily,db"]);
    let before = env.snapshot_ids();

    let out = json(
        &env,
        &[
            "tag", "--json", "--add", "keep", "--remove", "daily", &before[0],
        ],
    );
    assert_eq!(out["changed"].as_array().unwrap().len(), 1, "{out}");
    let tags = |id: &str| -> Vec<String> {
        let s = json(&env, &["snapshots", "--json"]);
        let snap = s
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .cloned()
            .unwrap();
        serde_json::from_value(snap["tags"].clone()).unwrap()
    };
    let new_first = out["changed"][0]["new_id"].as_str().unwrap().to_string();
    assert_eq!(tags(&new_first), ["keep"]);
    let after = env.snapshot_ids();
    assert_eq!(after.len(), 2, "the old object is gone");
    assert!(!after.contains(&before[0]));
    assert!(
        after.contains(&before[1]),
        "the other snapshot is untouched"
    );

    // every snapshot the filter selects; a second run changes nothing
    env.ok(&["tag", "--tag", "db", "--set", "x,y"]);
    let out = json(&env, &["tag", "--json", "--tag", "db", "--set", "x,y"]);
    assert_eq!(out["changed"], serde_json::json!([]), "{out}");
    // the data stays whole and restorable
    env.check_clean(&[]);
    let target = env.path("restored");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&root, &target.join(root.strip_prefix("/").unwrap()));
    let out = env.cairn().args(["tag", "latest"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--add, --remove or --set"));
}

#[test]
fn stats_count_in_each_mode() {
    let env = Env::new();
    env.init();
    let root = env.path("data");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let same = noise(100_000, 7);
    std::fs::write(root.join("f1"), &same).unwrap();
    std::fs::write(root.join("sub/f2"), &same).unwrap();
    std::fs::write(root.join("g"), noise(50_000, 8)).unwrap();
    env.ok(&["backup", root.to_str().unwrap()]);
    env.ok(&["backup", root.to_str().unwrap()]);
    let stats = |mode: &str| json(&env, &["stats", "--json", "--mode", mode]);

    let s = stats("restore-size");
    assert_eq!(s["snapshots_count"], 2, "{s}");
    assert_eq!(s["total_file_count"], 6, "{s}");
    assert_eq!(s["total_size"], 2 * 250_000, "{s}");
    let s = stats("files-by-contents");
    assert_eq!(
        (&s["total_file_count"], &s["total_size"]),
        (&json!(2), &json!(150_000)),
        "{s}"
    );
    let s = stats("blobs-per-file");
    assert_eq!(
        (&s["total_file_count"], &s["total_size"]),
        (&json!(2), &json!(150_000)),
        "{s}"
    );
    assert!(s["total_blob_count"].as_u64().unwrap() >= 2, "{s}");
    let s = stats("raw-data");
    let raw = s["total_uncompressed_size"].as_u64().unwrap();
    assert!(raw > 150_000, "data and trees: {s}");
    assert!(s["total_size"].as_u64().unwrap() > 0, "{s}");
    assert!(s["compression_ratio"].as_f64().unwrap() > 0.0, "{s}");
    // one snapshot by id
    let ids = env.snapshot_ids();
    let one = json(&env, &["stats", "--json", &ids[0]]);
    assert_eq!(one["total_size"], 250_000, "{one}");
    let out = env
        .cairn()
        .args(["stats", "--mode", "everything"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("restore-size"));
}

/// A name holding a terminal escape is shown, not obeyed, in every text
/// listing (a hostile snapshot must not drive the user's terminal).
#[test]
fn names_with_control_characters_print_escaped() {
    let env = Env::new();
    env.init();
    let root = env.path("data");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("x"), b"1").unwrap();
    env.ok(&["backup", root.to_str().unwrap()]);
    std::fs::write(root.join("evil\x1b]0;pwned\x07\x1b[2J"), b"2").unwrap();
    env.ok(&["backup", root.to_str().unwrap()]);
    let ids = env.snapshot_ids();
    for out in [
        env.ok(&["ls", "latest"]),
        env.ok(&["find", "evil*"]),
        env.ok(&["diff", &ids[0], &ids[1]]),
    ] {
        assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
        assert!(out.contains("evil\\x1b]0;pwned\\x07\\x1b[2J"), "{out}");
    }
    // JSON keeps the name exactly (escaped by JSON itself)
    let json = env.ok(&["ls", "--json", "latest"]);
    assert!(
        json.contains("evil\\u001b]0;pwned\\u0007\\u001b[2J"),
        "{json}"
    );
}
