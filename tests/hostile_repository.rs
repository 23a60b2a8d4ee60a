//! A repository crafted to attack restore: tree entries named `..` or with a
//! `/` must be refused, and nothing may be written outside the target.

mod common;
use cairn::repo::lock::{LockKind, LockOptions};
use cairn::repo::{CacheLocation, Repository};
use cairn::storage::Storage;
use cairn::tree::snapshot::Snapshot;
use cairn::tree::{Node, NodeKind, Tree};
use common::*;

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        user: String::new(),
        group: String::new(),
        mtime_ns: 0,
        ctime_ns: 0,
        size: 5,
        inode: 0,
        device: 0,
        links: 1,
        xattrs: vec![],
    }
}

/// Writes a snapshot whose root tree holds `evil` (a file with content "owned").
fn plant(env: &Env, evil: &[u8]) {
    plant_file(env, evil, b"owned", 5);
}

/// Writes a snapshot whose root tree holds one file, `name`, whose stored
/// content is `data` while its node claims `size` bytes.
fn plant_file(env: &Env, name: &[u8], data: &[u8], size: u64) {
    let keys = open_repo(env).keys.clone();
    let data_id = keys.blob_id(data);
    let mut file = node(
        name,
        NodeKind::File {
            content: vec![data_id],
        },
    );
    file.size = size;
    // encode() does not validate: the decoder must
    let tree = Tree { nodes: vec![file] }.encode();
    plant_snapshot(env, vec![data.to_vec()], vec![tree]);
}

fn open_repo(env: &Env) -> Repository {
    let storage = Storage::open(env.repo.to_str().unwrap()).unwrap();
    Repository::open(
        storage,
        PASSWORD.as_bytes(),
        &CacheLocation::Dir(env.cache.clone()),
    )
    .unwrap()
}

/// Writes data blobs and encoded trees in a pack each, and a snapshot of
/// the last tree. Returns the snapshot's tree id.
fn plant_snapshot(env: &Env, data: Vec<Vec<u8>>, trees: Vec<Vec<u8>>) -> cairn::Id {
    let repo = open_repo(env);
    repo.lock(
        LockKind::Shared,
        &LockOptions {
            retry: std::time::Duration::ZERO,
            command: "test".into(),
        },
    )
    .unwrap();
    let root = repo.keys.blob_id(trees.last().unwrap());
    plant_blobs(&repo, data, trees);
    repo.save_snapshot(&Snapshot {
        tree: root,
        paths: vec!["/x".into()],
        time_ns: 1_700_000_000_000_000_000 + trees_planted(),
        ..Default::default()
    })
    .unwrap();
    root
}

/// A distinct time for each snapshot planted, so `latest` is the last one.
fn trees_planted() -> i64 {
    static N: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    N.fetch_add(1_000_000_000, std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn dot_dot_and_slash_entries_are_refused() {
    for evil in [&b".."[..], b"../../escaped", b"a/b", b"."] {
        let env = Env::new();
        env.init();
        plant(&env, evil);
        let target = env.path("deep/target");
        let (code, err) = env.restore_into(&target, &["latest"]);
        assert_eq!(code, Some(1), "{evil:?} restored: {err}");
        assert!(err.contains("unsafe entry name"), "{err}");
        // nothing anywhere in the scratch dir outside the repository and cache holds the payload
        for f in walk_files(env.dir.path()) {
            if !f.starts_with(&env.repo) && !f.starts_with(&env.cache) {
                assert_ne!(
                    std::fs::read(&f).unwrap(),
                    b"owned",
                    "payload written to {}",
                    f.display()
                );
            }
        }
        let ls = env.cairn().args(["ls", "latest"]).output().unwrap();
        assert_eq!(ls.status.code(), Some(1));
    }
}

/// The state of a file outside the target that a redirected restore would
/// change: (mode, uid, mtime seconds).
fn outside_state(path: &std::path::Path) -> (u32, u32, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.mode(), m.uid(), m.mtime())
}

/// A restored directory replaced by a link to elsewhere before metadata is
/// applied, as a snapshot's link `A -> /etc` replaces its directory `a` on a
/// case-folding file system: ownership, modes and times must not follow the
/// link, whatever kind of entry lies behind it.
#[test]
fn metadata_never_follows_a_link_that_replaced_a_directory() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("a/sub")).unwrap();
    std::fs::write(src.join("a/passwd"), b"restored").unwrap();
    std::fs::set_permissions(src.join("a/passwd"), std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(src.join("a/sub"), std::fs::Permissions::from_mode(0o777)).unwrap();
    nix::unistd::mkfifo(
        &src.join("a/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    std::os::unix::fs::symlink("passwd", src.join("a/link")).unwrap();
    set_mtime(&src.join("a/passwd"), 1_000_000_000, 0);
    env.ok(&["backup", src.to_str().unwrap()]);

    // what the link will point to: same names, other modes and times
    let victim = env.path("etc");
    std::fs::create_dir_all(victim.join("sub")).unwrap();
    std::fs::write(victim.join("passwd"), b"root:x:0:0").unwrap();
    std::fs::write(victim.join("fifo"), b"not a fifo").unwrap();
    for (name, mode) in [("passwd", 0o600), ("fifo", 0o600), ("sub", 0o700)] {
        std::fs::set_permissions(victim.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&victim.join(name), 500_000_000, 0);
    }
    let names = ["passwd", "fifo", "sub", "link"];
    let before: Vec<_> = names
        .iter()
        .filter(|n| victim.join(n).exists())
        .map(|n| outside_state(&victim.join(n)))
        .collect();

    let target = env.path("target");
    let (mut child, pid) = stopped_at(
        env.process(),
        "restore-metadata:1",
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    // the restore has written the content and stands before the metadata
    let restored_a = target.join(src.strip_prefix("/").unwrap()).join("a");
    assert_eq!(
        std::fs::read(restored_a.join("passwd")).unwrap(),
        b"restored"
    );
    std::fs::rename(&restored_a, env.path("moved-away")).unwrap();
    std::os::unix::fs::symlink(&victim, &restored_a).unwrap();
    signal(pid, nix::sys::signal::Signal::SIGCONT);
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();

    let after: Vec<_> = names
        .iter()
        .filter(|n| victim.join(n).exists())
        .map(|n| outside_state(&victim.join(n)))
        .collect();
    assert_eq!(
        before, after,
        "metadata followed the link out of the target:\n{err}"
    );
    assert!(
        !victim.join("link").exists(),
        "a link was created outside the target"
    );
    assert_eq!(std::fs::read(victim.join("passwd")).unwrap(), b"root:x:0:0");
    assert!(
        !status.success(),
        "the redirected entries went unreported:\n{err}"
    );
    assert!(err.contains("passwd"), "{err}");
}

/// On a case-folding directory (ext4 `+F`) the snapshot itself can make the
/// swap above: a link `A -> outside` and a directory `a` with `passwd`.
#[test]
fn a_case_folding_target_cannot_redirect_metadata() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let target = env.path("target");
    std::fs::create_dir_all(&target).unwrap();
    let folds = std::process::Command::new("chattr")
        .arg("+F")
        .arg(&target)
        .output()
        .is_ok_and(|o| o.status.success());
    if !folds {
        eprintln!(
            "skipped: {} cannot be made case-folding here (needs ext4 or tmpfs with \
             casefold support and chattr); the link swap itself is tested by \
             metadata_never_follows_a_link_that_replaced_a_directory",
            target.display()
        );
        return;
    }
    env.init();
    let src = env.path("src");
    let victim = env.path("outside");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(src.join("a/passwd"), b"x").unwrap();
    std::fs::set_permissions(src.join("a/passwd"), std::fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::symlink(&victim, src.join("A")).unwrap();
    std::fs::write(victim.join("passwd"), b"root:x:0:0").unwrap();
    std::fs::set_permissions(
        victim.join("passwd"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let before = outside_state(&victim.join("passwd"));
    env.restore_into(&target, &["latest"]);
    assert_eq!(before, outside_state(&victim.join("passwd")));
    assert_eq!(std::fs::read(victim.join("passwd")).unwrap(), b"root:x:0:0");
}

/// A file whose stored content is longer than its node says: `dump`'s tar
/// would carry the extra bytes as further entries (a crafted tar header
/// among them becomes a file of the attacker's choosing). It is refused.
#[test]
fn dump_refuses_content_longer_than_its_entry() {
    let mut injected = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o4755);
    h.set_cksum();
    injected
        .append_data(&mut h, "injected", &b"pwned"[..])
        .unwrap();
    let payload = injected.into_inner().unwrap();
    for claimed in [0, 5] {
        let env = Env::new();
        env.init();
        plant_file(&env, b"innocent", &payload, claimed);
        let out = env.cairn().args(["dump", "latest", "/"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "size {claimed}: {err}");
        assert!(
            err.contains("longer than the size its entry records"),
            "{err}"
        );
        let mut archive = tar::Archive::new(&out.stdout[..]);
        let names: Vec<String> = archive
            .entries()
            .into_iter()
            .flatten()
            .map_while(Result::ok)
            .filter_map(|e| e.path().ok().map(|p| p.display().to_string()))
            .collect();
        assert!(
            !names.iter().any(|n| n.contains("injected")),
            "size {claimed}: the archive carries {names:?}"
        );
    }
}

/// A sparse file of `len` bytes at `path` (no disk space taken).
fn sparse(path: &std::path::Path, len: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// Objects far larger than any of their kind can be (sparse files of
/// 2 GiB, so reading one whole would take 2 GiB): under a 1 GiB address
/// space limit each command fails with an error naming the object, and no
/// allocation failure, panic or signal ends it.
#[test]
fn oversized_objects_fail_cleanly_under_a_memory_limit() {
    const LIMIT: u64 = 1 << 30;
    const HUGE: u64 = 2 << 30;
    if remote_backend() {
        eprintln!("skipped: the oversized objects are planted in a local repository");
        return;
    }
    let fake = "ab".repeat(32);
    // (object, command, what the error says); "packs" are all of them, read
    // whole when a cold cache fetches tree packs
    let cases: [(&str, &[&str], &[&str]); 5] = [
        (
            &format!("snapshots/{fake}"),
            &["snapshots"],
            &["larger than"],
        ),
        (
            &format!("index/{fake}"),
            &["ls", "latest"],
            &["larger than"],
        ),
        (
            &format!("locks/{fake}"),
            &["tag", "--add", "t", "latest"],
            &["larger than", "`cairn unlock --remove-all` removes it"],
        ),
        ("config", &["snapshots"], &["larger than"]),
        ("packs", &["ls", "latest"], &["data/"]),
    ];
    for (object, args, says) in cases {
        let what = object;
        let env = Env::new();
        env.init();
        let src = env.path("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), b"some data").unwrap();
        env.ok(&["backup", src.to_str().unwrap()]);
        let limited = |args: &[&str]| {
            let mut cmd = std::process::Command::new("prlimit");
            cmd.arg(format!("--as={LIMIT}"))
                .arg(env!("CARGO_BIN_EXE_cairn"))
                .args(args)
                .env_clear()
                .envs(env.env_vars());
            cmd.output().unwrap()
        };
        // the limit leaves room for a normal run
        let calm = limited(args);
        assert!(
            calm.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&calm.stderr)
        );

        let objects = if object == "packs" {
            std::fs::remove_dir_all(&env.cache).unwrap();
            walk_files(&env.repo.join("data"))
        } else {
            vec![env.repo.join(object)]
        };
        for object in &objects {
            sparse(object, HUGE);
        }
        let out = limited(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(1..=99)),
            "{what}: ended by {:?}: {err}",
            out.status
        );
        for says in says {
            assert!(err.contains(says), "{what}: {err}");
        }
        assert!(
            objects
                .iter()
                .any(|o| err.contains(o.file_name().unwrap().to_str().unwrap())),
            "{what}: the error names no object: {err}"
        );
    }
}

/// A snapshot whose directories `d` nest `depth` levels, the last holding
/// the file `f`. Returns its short id.
fn plant_deep(env: &Env, depth: usize) -> String {
    let keys = open_repo(env).keys.clone();
    let content = b"deep".to_vec();
    let mut file = node(
        b"f",
        NodeKind::File {
            content: vec![keys.blob_id(&content)],
        },
    );
    file.size = 4;
    let mut trees = vec![Tree { nodes: vec![file] }.encode()];
    for _ in 0..depth {
        let below = keys.blob_id(trees.last().unwrap());
        trees.push(
            Tree {
                nodes: vec![node(b"d", NodeKind::Dir { subtree: below })],
            }
            .encode(),
        );
    }
    plant_snapshot(env, vec![content], trees);
    env.snapshot_ids().pop().unwrap()
}

/// Directories nested as deep as a backup can make them are walked by
/// every command; one level more (only a hostile repository has it) is
/// refused with an error that says so, never a stack overflow.
#[test]
fn tree_depth_is_bounded_in_every_walk() {
    let max = cairn::tree::MAX_DEPTH;
    let env = Env::new();
    env.init();
    let empty = plant_snapshot(&env, vec![], vec![Tree::default().encode()]);
    assert_ne!(empty, cairn::Id([0; 32]));
    let base = env.snapshot_ids().pop().unwrap();
    let deep = plant_deep(&env, max);
    let too_deep = plant_deep(&env, max + 1);
    let target = env.path("t");
    let tgt = target.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["ls", "-R", "SNAP"],
        vec!["find", "f", "--snapshot", "SNAP"],
        vec!["diff", &base, "SNAP"],
        vec!["stats", "SNAP"],
        vec!["stats", "--mode", "raw-data", "SNAP"],
        vec!["dump", "SNAP", "/"],
        vec!["restore", "SNAP", "--target", tgt],
    ];
    for args in &commands {
        let run = |snap: &str| {
            let args: Vec<&str> = args
                .iter()
                .map(|a| if *a == "SNAP" { snap } else { a })
                .collect();
            let out = env.cairn().args(&args).output().unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
                out.stdout.len(),
            )
        };
        let (code, err, printed) = run(&deep);
        if args[0] == "restore" {
            // 2048 levels of `d/` exceed the kernel's 4096-byte path limit
            // below any target: what cannot be made is reported, no crash
            let tail: String = err
                .chars()
                .skip(err.chars().count().saturating_sub(300))
                .collect();
            assert!(
                code == Some(0) || (code == Some(1) && err.contains("File name too long")),
                "{args:?}: {code:?} …{tail}"
            );
        } else {
            assert_eq!(code, Some(0), "{args:?} at {max} levels: {err}");
            assert!(printed > 0, "{args:?} printed nothing");
        }
        let (code, err, _) = run(&too_deep);
        assert_eq!(code, Some(1), "{args:?} at {} levels: {err}", max + 1);
        assert!(
            err.contains("nest more than 2048 levels"),
            "{args:?}: {err}"
        );
    }
    let out = env.cairn().args(["check"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("nest more than 2048 levels"), "{err}");
    assert_eq!(err.matches("nest more than").count(), 1, "{err}");
}
