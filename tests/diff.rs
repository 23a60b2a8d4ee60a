//! `cairn diff`: every kind of change between two snapshots, with restic's
//! markers and statistics.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn diff_names_every_change_and_counts_them() {
    let env = Env::new();
    env.init();
    let root = env.path("data");
    let r = |p: &str| root.join(p);
    std::fs::create_dir_all(r("d")).unwrap();
    std::fs::write(r("a.txt"), noise(5000, 1)).unwrap();
    std::fs::write(r("b.txt"), noise(700, 2)).unwrap();
    std::fs::write(r("d/x"), b"same").unwrap();
    std::fs::write(r("t"), b"a file first").unwrap();
    std::os::unix::fs::symlink("a.txt", r("link")).unwrap();
    env.ok(&["backup", root.to_str().unwrap()]);

    std::fs::write(r("a.txt"), noise(6000, 3)).unwrap();
    std::fs::remove_file(r("b.txt")).unwrap();
    std::fs::write(r("c.txt"), noise(300, 4)).unwrap();
    std::fs::write(r("d/y"), b"new").unwrap();
    std::fs::set_permissions(r("d/x"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(r("t")).unwrap();
    std::fs::create_dir(r("t")).unwrap();
    std::fs::write(r("t/z"), b"zz").unwrap();
    std::fs::create_dir_all(r("e")).unwrap();
    std::fs::write(r("e/f"), b"ffff").unwrap();
    std::fs::remove_file(r("link")).unwrap();
    std::os::unix::fs::symlink("c.txt", r("link")).unwrap();
    env.ok(&["backup", root.to_str().unwrap()]);
    let ids = env.snapshot_ids();
    let base = root.display().to_string();

    let changes = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["diff", "--json", &ids[0], &ids[1]];
        args.extend(extra);
        env.ok(&args)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["message_type"] == "change")
            .map(|v| {
                let path = v["path"].as_str().unwrap().replace(&base, "");
                format!("{} {path}", v["modifier"].as_str().unwrap())
            })
            .collect()
    };
    assert_eq!(
        changes(&[]),
        [
            "M /a.txt", "- /b.txt", "+ /c.txt", "+ /d/y", "+ /e/", "+ /e/f", "M /link", "T /t",
            "+ /t/z"
        ],
    );
    let with_metadata = changes(&["--metadata"]);
    assert!(
        with_metadata.contains(&"U /d/x".to_string()),
        "{with_metadata:?}"
    );
    assert!(!with_metadata
        .iter()
        .any(|c| c.ends_with("/d/y") && c.starts_with('U')));

    let out = env.ok(&["diff", "--json", &ids[0], &ids[1]]);
    let stats = last_json(&out);
    assert_eq!(stats["message_type"], "statistics");
    assert_eq!(stats["source_snapshot"], ids[0].as_str());
    assert_eq!(stats["changed_files"], 1, "{stats}");
    // added: c.txt, d/y, e/f, t/z, and the new t (a dir) and e; removed:
    // b.txt and the old t (a file)
    assert_eq!(stats["added"]["files"], 4, "{stats}");
    assert_eq!(stats["added"]["dirs"], 2, "{stats}");
    assert_eq!(stats["added"]["bytes"], 300 + 3 + 4 + 2, "{stats}");
    assert_eq!(stats["removed"]["files"], 2, "{stats}");
    assert_eq!(stats["removed"]["bytes"], 700 + 12, "{stats}");

    // the same snapshot twice: nothing
    assert_eq!(
        env.ok(&["diff", &ids[1], &ids[1]])
            .lines()
            .filter(|l| l.starts_with('+'))
            .count(),
        0
    );
    let text = env.ok(&["diff", &ids[0], "latest"]);
    assert!(
        text.contains("Files:        4 new,      2 removed,      1 changed"),
        "{text}"
    );
}
