//! End to end: back up an awkward tree with the real binary, restore it, and
//! compare byte for byte.

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;

fn backed_up_env() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    awkward_tree(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    (env, src)
}

#[test]
fn full_restore_is_identical() {
    let (env, src) = backed_up_env();
    let target = env.path("restored");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    // the absolute source path is recreated below the target
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_same_tree(&src, &restored);
    // holes stay holes: far fewer blocks than the 32 MiB size
    let sparse = std::fs::metadata(restored.join("sparse.img")).unwrap();
    assert_eq!(sparse.len(), 32 * 1024 * 1024);
    assert!(
        sparse.blocks() * 512 < 4 * 1024 * 1024,
        "sparse file restored dense: {} blocks",
        sparse.blocks()
    );
}

#[test]
fn subpath_restore_and_includes_touch_only_the_selection() {
    let (env, src) = backed_up_env();
    // SNAPSHOT:SUBPATH puts the contents of SUBPATH directly in the target
    let t1 = env.path("t1");
    let sub = format!("latest:{}/big", src.display());
    env.ok(&["restore", &sub, "--target", t1.to_str().unwrap()]);
    assert_same_tree(&src.join("big"), &t1);

    // --include of one deep file: only it (and its parents) appear
    let t2 = env.path("t2");
    std::fs::create_dir_all(&t2).unwrap();
    std::fs::write(t2.join("unrelated"), b"keep me").unwrap();
    let deep = walk_all(&src)
        .into_iter()
        .find(|p| p.ends_with("bottom.txt"))
        .unwrap();
    env.ok(&[
        "restore",
        "latest",
        "--target",
        t2.to_str().unwrap(),
        "--include",
        deep.to_str().unwrap(),
    ]);
    let restored = t2.join(deep.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(&restored).unwrap(), b"deep file");
    let files = walk_files(&t2);
    assert_eq!(
        files.len(),
        2,
        "only the included file and the unrelated one: {files:?}"
    );
    assert_eq!(std::fs::read(t2.join("unrelated")).unwrap(), b"keep me");

    // --exclude by name drops matching entries everywhere
    let t3 = env.path("t3");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        t3.to_str().unwrap(),
        "--exclude",
        "*.bin",
    ]);
    let r3 = t3.join(src.strip_prefix("/").unwrap());
    assert!(!r3.join("big/random.bin").exists());
    assert!(r3.join("big/text.log").exists());
}

#[test]
fn restore_skips_files_that_already_match_and_repairs_others() {
    let (env, src) = backed_up_env();
    let target = env.path("t");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let restored = target.join(src.strip_prefix("/").unwrap());
    std::fs::write(restored.join("plain.txt"), b"damaged!!!!!!").unwrap();
    std::fs::remove_file(restored.join("big/text.log")).unwrap();
    let out = env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--json",
    ]);
    let v = last_json(&out);
    assert!(v["files_skipped"].as_u64().unwrap() >= 10, "{v}");
    assert_same_tree(&src, &restored);
}

/// A small file (one chunk) is created by whoever writes its chunk: one
/// that ends in zero blocks, which are left as holes, still gets its full
/// size, in a directory the restore makes and in one that is already there
/// holding something else under that name.
#[test]
fn small_files_ending_in_zeros_come_back_whole() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut tail_zeros = noise(5000, 3);
    tail_zeros.resize(5000 + 3 * 4096, 0);
    std::fs::write(src.join("tail-zeros.bin"), &tail_zeros).unwrap();
    std::fs::write(src.join("zeros.bin"), vec![0u8; 10_000]).unwrap();
    std::fs::write(src.join("one-byte"), b"x").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let target = env.path("t");
    let restored = target.join(src.strip_prefix("/").unwrap());
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored);
    // the directory exists now: a longer file and a link take the names
    std::fs::write(restored.join("tail-zeros.bin"), noise(100_000, 4)).unwrap();
    std::fs::remove_file(restored.join("zeros.bin")).unwrap();
    std::os::unix::fs::symlink(env.path("outside"), restored.join("zeros.bin")).unwrap();
    std::fs::remove_file(restored.join("one-byte")).unwrap();
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored);
    assert!(!env.path("outside").exists(), "the restore followed a link");
}

#[test]
fn dump_writes_a_file_and_a_directory_as_tar() {
    let (env, src) = backed_up_env();
    let file = src.join("big/random.bin");
    let out = env
        .cairn()
        .args(["dump", "latest", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, std::fs::read(&file).unwrap());

    let tar = env
        .cairn()
        .args(["dump", "latest", src.join("big").to_str().unwrap()])
        .output()
        .unwrap();
    common::assert_success(&tar);
    let x = env.path("untar");
    std::fs::create_dir_all(&x).unwrap();
    let mut archive = tar::Archive::new(&tar.stdout[..]);
    archive.set_preserve_mtime(true);
    archive.set_preserve_permissions(true);
    archive.unpack(&x).unwrap();
    for name in ["random.bin", "copy-of-random.bin", "text.log"] {
        assert_eq!(
            std::fs::read(x.join("big").join(name)).unwrap(),
            std::fs::read(src.join("big").join(name)).unwrap()
        );
    }
}

#[test]
fn unchanged_second_backup_adds_under_one_percent() {
    let (env, src) = backed_up_env();
    let before = env.repo_bytes();
    let out = env.ok(&["backup", src.to_str().unwrap(), "--json"]);
    let v = last_json(&out);
    assert_eq!(v["message_type"], "summary");
    assert_eq!(v["files_new"], 0, "{v}");
    assert_eq!(v["files_changed"], 0, "{v}");
    assert_eq!(v["files_unmodified"], 19, "{v}");
    // The root tree mirrors absolute paths, so it records the ancestors of
    // the source (/tmp, ...). Other processes change /tmp's mtime, which may
    // legitimately add those few small tree records: never file data.
    assert!(
        v["data_added"].as_u64().unwrap() < 1024,
        "more than ancestor trees added: {v}"
    );
    // processed counts unchanged files too, as restic does: all of the source
    assert_eq!(
        v["total_bytes_processed"].as_u64().unwrap(),
        walk_files(&src)
            .iter()
            .map(|f| std::fs::symlink_metadata(f).unwrap().len())
            .sum::<u64>(),
        "{v}"
    );
    assert_eq!(v["files_reread"], 0, "an unchanged file was read: {v}");
    let after = env.repo_bytes();
    assert!(
        (after - before) * 100 < before,
        "second backup added {} of {before} bytes",
        after - before
    );
    // the parent is recorded
    let snaps: serde_json::Value = serde_json::from_str(&env.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(snaps[1]["parent"], snaps[0]["id"]);
}

#[test]
fn deleting_the_cache_changes_no_result() {
    let (env, src) = backed_up_env();
    let ls1 = env.ok(&["ls", "latest", "--json"]);
    std::fs::remove_dir_all(&env.cache).unwrap();
    let ls2 = env.ok(&["ls", "latest", "--json"]);
    assert_eq!(ls1, ls2);
    assert!(ls1.lines().count() > 60);
    std::fs::remove_dir_all(&env.cache).unwrap();
    let target = env.path("t");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
    // --no-cache works too, and leaves no cache behind
    let ls3 = env.ok(&["ls", "latest", "--json", "--no-cache"]);
    assert_eq!(ls1, ls3);
}

#[test]
fn stdin_backup_round_trips_through_dump() {
    let env = Env::new();
    env.init();
    let data = noise(5 * 1024 * 1024 + 7, 99);
    env.cairn()
        .args([
            "backup",
            "--stdin",
            "--stdin-filename",
            "db.sql",
            "--tag",
            "db",
        ])
        .write_stdin(data.clone())
        .assert()
        .success();
    let out = env
        .cairn()
        .args(["dump", "latest", "db.sql"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, data);
    let snaps: serde_json::Value = serde_json::from_str(&env.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(snaps[0]["paths"][0], "/db.sql");
    assert_eq!(snaps[0]["tags"][0], "db");
}

#[test]
fn a_stream_backup_records_its_parent_and_a_missing_parent_fails_first() {
    let env = Env::new();
    env.init();
    let stdin_backup = |extra: &[&str], data: Vec<u8>| {
        env.cairn()
            .args(["backup", "--stdin", "--stdin-filename", "db.sql"])
            .args(extra)
            .write_stdin(data)
            .output()
            .unwrap()
    };
    assert!(stdin_backup(&[], noise(300_000, 1)).status.success());
    assert!(stdin_backup(&[], noise(300_000, 2)).status.success());
    // the parent is looked up after the stream is read, and still recorded
    let snaps: serde_json::Value = serde_json::from_str(&env.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(snaps[1]["parent"], snaps[0]["id"]);
    // a parent named on the command line that does not exist is an error
    // before anything is stored
    let packs_before = env.repo_bytes();
    let out = stdin_backup(&["--parent", "deadbeef"], noise(3_000_000, 3));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("deadbeef"), "{err}");
    assert_eq!(env.repo_bytes(), packs_before, "nothing was stored");
}

#[test]
fn snapshot_naming_and_json_shapes() {
    let env = Env::new();
    env.init();
    let a = env.path("a");
    let b = env.path("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("f"), b"a").unwrap();
    std::fs::write(b.join("f"), b"b").unwrap();
    env.ok(&[
        "backup",
        a.to_str().unwrap(),
        "--host",
        "alpha",
        "--tag",
        "x",
        "--time",
        "2024-01-02 03:04:05",
    ]);
    env.ok(&[
        "backup",
        b.to_str().unwrap(),
        "--host",
        "beta",
        "--time",
        "2024-02-01T00:00:00Z",
    ]);
    let snaps: serde_json::Value = serde_json::from_str(&env.ok(&["snapshots", "--json"])).unwrap();
    let s = &snaps[0];
    for key in [
        "id", "short_id", "time", "hostname", "username", "paths", "tags", "tree", "parent",
    ] {
        assert!(s.get(key).is_some(), "snapshots --json lacks {key}: {s}");
    }
    assert_eq!(s["time"], "2024-01-02T03:04:05+00:00");
    assert_eq!(
        s["short_id"].as_str().unwrap(),
        &s["id"].as_str().unwrap()[..8]
    );
    // latest narrowed by host / tag / path, and an id prefix
    let dump = |args: &[&str]| env.ok(&[&["dump"], args].concat());
    assert_eq!(dump(&["latest", &format!("{}/f", b.display())]), "b");
    assert_eq!(
        dump(&["latest", "--host", "alpha", &format!("{}/f", a.display())]),
        "a"
    );
    assert_eq!(
        dump(&["latest", "--tag", "x", &format!("{}/f", a.display())]),
        "a"
    );
    assert_eq!(
        dump(&[
            "latest",
            "--path",
            a.to_str().unwrap(),
            &format!("{}/f", a.display())
        ]),
        "a"
    );
    assert_eq!(
        dump(&[
            &s["short_id"].as_str().unwrap()[..6],
            &format!("{}/f", a.display())
        ]),
        "a"
    );
    // ls --json: one object per line with the documented fields
    let ls = env.ok(&["ls", "latest", "--json"]);
    for line in ls.lines() {
        let n: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["name", "type", "path", "size", "mode", "mtime"] {
            assert!(n.get(key).is_some(), "ls --json lacks {key}: {n}");
        }
    }
    assert!(ls.contains(&format!("\"path\":\"{}/f\"", b.display())));
}

#[test]
fn excludes_and_exclude_file() {
    let env = Env::new();
    env.init();
    let src = env.path("s");
    for f in [
        "keep.txt",
        "skip.tmp",
        "cache/big",
        "sub/keep2.txt",
        "sub/also.tmp",
    ] {
        let p = src.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, f).unwrap();
    }
    let ex = env.path("excludes");
    std::fs::write(&ex, format!("# comment\n\n{}/cache\n", src.display())).unwrap();
    env.ok(&[
        "backup",
        src.to_str().unwrap(),
        "--exclude",
        "*.tmp",
        "--exclude-file",
        ex.to_str().unwrap(),
    ]);
    let ls = env.ok(&["ls", "latest"]);
    assert!(ls.contains("keep.txt") && ls.contains("keep2.txt"), "{ls}");
    assert!(!ls.contains(".tmp") && !ls.contains("cache"), "{ls}");
}

#[test]
fn dry_run_stores_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("s");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), noise(100_000, 3)).unwrap();
    let before = env.repo_bytes();
    let out = env.ok(&["backup", src.to_str().unwrap(), "--dry-run", "--json"]);
    let v = last_json(&out);
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["data_added"].as_u64().unwrap() >= 100_000, true, "{v}");
    assert_eq!(env.repo_bytes(), before);
    assert!(env.snapshot_ids().is_empty());
}

#[test]
fn json_backup_reports_status_lines_then_the_summary() {
    use std::io::Write;
    let env = Env::new();
    env.init();
    let mut child = env
        .process()
        .args([
            "backup",
            "--json",
            "--stdin",
            "--stdin-filename",
            "slow.bin",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for part in 0..3 {
        stdin.write_all(&noise(2_000_000, part)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (summary, status) = lines.split_last().unwrap();
    assert_eq!(summary["message_type"], "summary");
    assert_eq!(summary["total_bytes_processed"], 6_000_000);
    assert!(status.len() >= 2, "{status:?}");
    let mut last = 0;
    for s in status {
        assert_eq!(s["message_type"], "status");
        let done = s["bytes_done"].as_u64().unwrap();
        assert!(done >= last && done <= 6_000_000, "{s}");
        last = done;
    }
    assert!(last >= 2_000_000, "progress never moved: {status:?}");
}

#[test]
fn verbose_names_each_file_by_what_became_of_it() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a"), b"one").unwrap();
    std::fs::write(src.join("d/b"), b"two").unwrap();
    let s = src.to_str().unwrap();
    let lines = |out: String| -> Vec<String> {
        let mut l: Vec<String> = out
            .lines()
            .filter(|l| l.starts_with(['n', 'm', 'u', 'r', 's']) && l.contains(s))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        l.sort();
        l
    };
    assert_eq!(
        lines(env.ok(&["backup", "-v", s])),
        [format!("new {s}/a"), format!("new {s}/d/b")]
    );
    std::fs::write(src.join("a"), b"changed").unwrap();
    std::fs::write(src.join("c"), b"three").unwrap();
    // -v: what was stored; -vv: also what was not read
    assert_eq!(
        lines(env.ok(&["backup", "-v", s])),
        [format!("modified {s}/a"), format!("new {s}/c")]
    );
    assert_eq!(
        lines(env.ok(&["backup", "-vv", s])),
        [
            format!("unchanged {s}/a"),
            format!("unchanged {s}/c"),
            format!("unchanged {s}/d/b")
        ]
    );
    assert!(lines(env.ok(&["backup", s])).is_empty(), "quiet without -v");
    // JSON lines as restic's verbose_status
    let json: Vec<serde_json::Value> = env
        .ok(&["backup", "-vv", "--json", s])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["message_type"] == "verbose_status")
        .collect();
    assert_eq!(json.len(), 3);
    assert!(json.iter().all(|v| v["action"] == "unchanged"), "{json:?}");

    let target = env.path("target");
    let t = target.to_str().unwrap().to_string();
    let out = env.ok(&["restore", "latest", "--target", &t, "-v"]);
    let restored: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("restored ") && l.contains(s))
        .collect();
    assert_eq!(restored.len(), 3, "{out}");
    let out = env.ok(&["restore", "latest", "--target", &t, "-vv"]);
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("skipped ") && l.contains(s))
            .count(),
        3,
        "{out}"
    );
}

/// Small files between subdirectories, a directory holding more small-file
/// content than the read-ahead may hold at once (4 MiB), a file too large
/// to read ahead and empty files: the read-ahead hands every file over in
/// the archiver's order. Run with 32 descriptors, where 16 readers plus the
/// index cache and uploads would not fit.
#[test]
fn many_small_files_round_trip_under_a_low_descriptor_limit() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mut seed = 0u64;
    let mut file = |path: std::path::PathBuf, len: usize| {
        seed += 1;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, noise(len, seed)).unwrap();
    };
    for d in 0..6 {
        let dir = src.join(format!("d{d}"));
        for f in 0..80 {
            file(
                dir.join(format!("f{f:03}")),
                1 + (f * 397 + d * 31) % 30_000,
            );
            if f % 20 == 7 {
                // a subdirectory sorting among the files
                for g in 0..15 {
                    file(dir.join(format!("f{f:03}-sub/g{g}")), 100 + g * 1_000);
                }
            }
        }
        file(dir.join("large"), 3 << 20);
        file(dir.join("empty"), 0);
    }
    for f in 0..12 {
        file(src.join("full").join(format!("f{f:02}")), 600 << 10);
    }
    let limited = |args: &[&str]| {
        let out = std::process::Command::new("prlimit")
            .arg("--nofile=32")
            .arg(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .env_clear()
            .envs(env.env_vars())
            .output()
            .unwrap();
        assert_success(&out);
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let path = src.to_str().unwrap();
    limited(&["backup", "-q", path]);
    // the same input gives the same trees, read again or taken from the parent
    limited(&["backup", "-q", "--force", path]);
    limited(&["backup", "-q", path]);
    // (the trees of `src` itself: the root trees also hold /tmp, which other
    // tests change meanwhile)
    let trees: Vec<String> = env
        .snapshot_ids()
        .iter()
        .map(|id| env.tree_at(id, &src))
        .collect();
    assert_eq!(trees.len(), 3);
    assert!(trees.iter().all(|t| *t == trees[0]), "{trees:?}");
    let target = env.path("restored");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
}
