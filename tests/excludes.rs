//! Excludes mean what they mean in restic: the same tree backed up by both
//! tools with the same options leaves out the same entries (restic is the
//! reference), and the forms restic 0.14 lacks (`!`, `dir/`) behave as
//! documented.

mod common;

use common::*;
use std::collections::BTreeSet;

/// Every path below `root` in the latest snapshot, from `ls --json` of
/// either tool (restic's lines and cairn's share the fields used here).
fn listed(json_lines: &str, root: &std::path::Path) -> BTreeSet<String> {
    let prefix = format!("{}/", root.display());
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["struct_type"] == "node")
        .filter_map(|v| v["path"].as_str().map(String::from))
        .filter_map(|p| p.strip_prefix(&prefix).map(String::from))
        .collect()
}

fn tree(root: &std::path::Path) {
    let files: &[(&str, usize)] = &[
        ("node_modules/pkg/index.js", 10),
        ("src/node_modules/x.js", 10),
        ("src/main.rs", 10),
        ("src/a.tmp", 10),
        ("src/a.tmpl", 10),
        ("b/c/file", 10),
        ("x/b/c/file2", 10),
        ("ab/c/file3", 10),
        ("logs/keep.txt", 10),
        ("logs/drop.log", 10),
        ("logs/important.log", 10),
        ("build/out.o", 10),
        ("other/build", 10),
        ("cache/CACHEDIR.TAG", 0),
        ("cache/blob", 10),
        ("fakecache/CACHEDIR.TAG", 0),
        ("marked/.nobackup", 0),
        ("marked/data", 10),
        ("big.bin", 2 << 20),
        ("small.bin", 1000),
        ("Photos/A.JPG", 10),
        ("photos/b.jpg", 10),
        ("photos/c.png", 10),
    ];
    for (path, len) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, noise(*len, 3)).unwrap();
    }
    std::fs::write(
        root.join("cache/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .unwrap();
    std::fs::write(root.join("fakecache/CACHEDIR.TAG"), "Signature: wrong\n").unwrap();
}

#[test]
fn excludes_leave_out_what_restic_leaves_out() {
    let env = Env::new();
    env.init();
    let root = env.path("data");
    tree(&root);
    let root_text = root.to_str().unwrap();
    let anchored = format!("{root_text}/small.bin");
    let options: Vec<&str> = vec![
        "--exclude",
        "node_modules",
        "--exclude",
        "b/c",
        "--exclude",
        "*.tmp",
        "--exclude",
        "*.log",
        "--exclude",
        &anchored,
        "--iexclude",
        "*.jpg",
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-larger-than",
        "1M",
    ];
    let mut args = vec!["backup", root_text];
    args.extend(&options);
    env.ok(&args);
    let ours = listed(&env.ok(&["ls", "--json", "latest"]), &root);

    restic(&env, &["init"]);
    restic(&env, &args);
    let theirs = listed(&restic(&env, &["ls", "--json", "latest"]), &root);
    assert_eq!(
        ours, theirs,
        "cairn (left) and restic leave out different entries"
    );
    // and the reference did leave things out (the test means something)
    for gone in [
        "node_modules",
        "src/node_modules",
        "b/c",
        "x/b/c",
        "src/a.tmp",
        "logs/drop.log",
        "small.bin",
        "photos/b.jpg",
        "Photos/A.JPG",
        "cache/blob",
        "marked/data",
        "big.bin",
    ] {
        assert!(!ours.contains(gone), "{gone} was backed up: {ours:?}");
    }
    for kept in [
        "src/main.rs",
        "src/a.tmpl",
        "ab/c/file3",
        "logs/keep.txt",
        "photos/c.png",
        "fakecache/CACHEDIR.TAG",
        "other/build",
    ] {
        assert!(ours.contains(kept), "{kept} is missing: {ours:?}");
    }
}

#[test]
fn negation_and_directory_only_patterns() {
    let env = Env::new();
    env.init();
    let root = env.path("data");
    tree(&root);
    let file = env.path("excludes.txt");
    std::fs::write(
        &file,
        "# logs, but not the important one\n*.log\n!important.log\n\nbuild/\n",
    )
    .unwrap();
    env.ok(&[
        "backup",
        root.to_str().unwrap(),
        "--exclude-file",
        file.to_str().unwrap(),
    ]);
    let ours = listed(&env.ok(&["ls", "--json", "latest"]), &root);
    assert!(!ours.contains("logs/drop.log"), "{ours:?}");
    assert!(ours.contains("logs/important.log"), "{ours:?}");
    assert!(
        !ours.contains("build"),
        "the directory build/ is left out: {ours:?}"
    );
    assert!(
        ours.contains("other/build"),
        "a file named build is not a directory: {ours:?}"
    );
}

#[test]
fn a_bad_exclude_is_refused_before_anything_is_stored() {
    let env = Env::new();
    env.init();
    let root = env.path("data");
    tree(&root);
    for (flag, value, says) in [
        ("--exclude", "a[", "invalid exclude pattern \"a[\""),
        ("--exclude-if-present", "a/b", "give a file name"),
        ("--exclude-larger-than", "lots", "is not a size"),
    ] {
        let out = env
            .cairn()
            .args(["backup", root.to_str().unwrap(), flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
    assert!(env.snapshot_ids().is_empty());
}

/// `--files-from` and its verbatim and NUL-separated forms name exactly
/// what is backed up, odd names included.
#[test]
fn path_lists_name_what_is_backed_up() {
    let env = Env::new();
    env.init();
    let root = env.path("data");
    tree(&root);
    let odd = root.join(" spaced\nname");
    std::fs::write(&odd, b"odd").unwrap();
    let lines = env.path("list.txt");
    std::fs::write(
        &lines,
        format!(
            "# what matters\n  {}/src  \n\n{}/b\n",
            root.display(),
            root.display()
        ),
    )
    .unwrap();
    let raw = env.path("list.raw");
    let mut bytes = odd.as_os_str().as_encoded_bytes().to_vec();
    bytes.push(0);
    std::fs::write(&raw, bytes).unwrap();
    env.ok(&[
        "backup",
        "--files-from",
        lines.to_str().unwrap(),
        "--files-from-raw",
        raw.to_str().unwrap(),
    ]);
    let ours = listed(&env.ok(&["ls", "--json", "latest"]), &root);
    assert!(
        ours.contains("src/main.rs") && ours.contains("b/c/file"),
        "{ours:?}"
    );
    assert!(ours.contains(" spaced\nname"), "{ours:?}");
    assert!(
        !ours.contains("x/b/c/file2") && !ours.contains("big.bin"),
        "{ours:?}"
    );
    // a listed path that does not exist fails the backup, naming it
    std::fs::write(&lines, "/no/such/path\n").unwrap();
    let out = env
        .cairn()
        .args(["backup", "--files-from", lines.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/path"));
}
