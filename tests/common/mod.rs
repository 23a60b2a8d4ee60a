//! Helpers for end-to-end tests: a scratch repository, the real binary, an
//! awkward source tree, and a byte-exact comparison of two trees.
#![allow(dead_code)]

use assert_cmd::Command;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Env {
    pub dir: tempfile::TempDir,
    /// The local repository directory (unused when `remote` is set).
    pub repo: PathBuf,
    pub cache: PathBuf,
    /// `s3://…` or `swift://…` when CAIRN_TEST_BACKEND selects object storage.
    pub remote: Option<String>,
    /// Run cairn with the object store's append-only user (whose deletes
    /// the store refuses) instead of the admin; see `use_append_only_user`.
    append_only: std::sync::atomic::AtomicBool,
}

/// Variables an object-storage repository needs, passed through to cairn.
const STORAGE_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_EC2_METADATA_DISABLED",
    "SWIFT_ENDPOINT",
    "SWIFT_TOKEN",
];

/// The repository URL for a test under CAIRN_TEST_BACKEND=s3|swift (a
/// fresh prefix of the test bucket), or None for a local directory.
fn remote_url(unique: &str) -> Option<String> {
    match std::env::var("CAIRN_TEST_BACKEND").ok().as_deref() {
        None | Some("") | Some("local") => None,
        Some("s3") => Some(format!(
            "s3://{}/{unique}",
            std::env::var("CAIRN_TEST_S3_BUCKET")
                .expect("CAIRN_TEST_S3_BUCKET (scripts/object-store.sh)")
        )),
        Some("swift") => Some(format!(
            "swift://{}/{unique}",
            std::env::var("CAIRN_TEST_SWIFT_CONTAINER")
                .expect("CAIRN_TEST_SWIFT_CONTAINER (scripts/object-store.sh)")
        )),
        Some(other) => panic!("CAIRN_TEST_BACKEND={other}: expected local, s3 or swift"),
    }
}

/// Whether this run puts repositories on object storage.
pub fn remote_backend() -> bool {
    remote_url("x").is_some()
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("cairn-e2e-")
            .tempdir()
            .unwrap();
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        let unique = dir
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let remote = remote_url(&unique);
        Env {
            dir,
            repo,
            cache,
            remote,
            append_only: false.into(),
        }
    }

    /// From now on cairn runs with credentials that cannot delete (object
    /// storage only: scripts/object-store.sh exports them). Returns false
    /// when this is no object-store run.
    pub fn use_append_only_user(&self, on: bool) -> bool {
        if self.remote.is_none() {
            return false;
        }
        assert!(
            std::env::var_os("CAIRN_TEST_APPENDONLY_AWS_ACCESS_KEY_ID").is_some(),
            "the append-only user's credentials (scripts/object-store.sh exports them)"
        );
        self.append_only
            .store(on, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// A second environment on the same storage kind.
    pub fn url(&self) -> std::ffi::OsString {
        match &self.remote {
            Some(u) => u.into(),
            None => self.repo.clone().into(),
        }
    }

    fn storage(&self) -> cairn::storage::Storage {
        cairn::storage::Storage::open(self.url().to_str().unwrap()).unwrap()
    }

    /// Every object of the repository (but locks) with its size, by path.
    pub fn objects(&self, dir: &str) -> BTreeMap<String, u64> {
        self.storage()
            .list(dir)
            .unwrap()
            .into_iter()
            .filter(|o| !o.path.starts_with("locks/"))
            .map(|o| (o.path, o.size))
            .collect()
    }

    /// Bytes stored in the repository (but locks).
    pub fn repo_bytes(&self) -> u64 {
        self.objects("").values().sum()
    }

    pub fn delete_object(&self, path: &str) {
        self.storage().delete(path).unwrap()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cairn(&self) -> Command {
        self.command(Command::cargo_bin("cairn").unwrap())
    }

    /// The whole environment cairn runs with: this repository and cache only.
    pub fn env_vars(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        vec![
            ("PATH", std::env::var_os("PATH").unwrap_or_default()),
            ("HOME", self.dir.path().into()),
            ("CAIRN_REPOSITORY", self.url()),
            ("CAIRN_PASSWORD", PASSWORD.into()),
            ("CAIRN_CACHE_DIR", self.cache.clone().into()),
            ("TZ", "UTC".into()),
        ]
        .into_iter()
        .chain(
            STORAGE_VARS
                .iter()
                .filter(|_| self.remote.is_some())
                .filter_map(|v| std::env::var_os(self.storage_var(v)).map(|val| (*v, val))),
        )
        .collect()
    }

    /// Where the value of storage variable `v` comes from.
    fn storage_var(&self, v: &str) -> String {
        let append_only = self.append_only.load(std::sync::atomic::Ordering::Relaxed);
        match v {
            "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" | "SWIFT_TOKEN" if append_only => {
                format!("CAIRN_TEST_APPENDONLY_{v}")
            }
            _ => v.to_string(),
        }
    }

    /// `c` with a clean environment pointing at this repository and cache.
    pub fn command(&self, mut c: Command) -> Command {
        c.env_clear().envs(self.env_vars());
        c
    }

    /// The binary as a plain process (to spawn, pipe and kill it).
    pub fn process(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("cairn"));
        c.env_clear().envs(self.env_vars());
        c
    }

    pub fn init(&self) -> &Env {
        self.cairn().arg("init").assert().success();
        self
    }

    /// Runs `cairn restore ARGS --target TARGET`; returns the exit code and stderr.
    pub fn restore_into(&self, target: &Path, args: &[&str]) -> (Option<i32>, String) {
        let out = self
            .cairn()
            .arg("restore")
            .args(args)
            .arg("--target")
            .arg(target)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `cairn ARGS` and returns stdout, failing the test on a non-zero exit.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cairn().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "cairn {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The id of the tree a snapshot holds for the directory `path`.
    pub fn tree_at(&self, snapshot: &str, path: &Path) -> String {
        let json =
            |args: &[&str]| -> serde_json::Value { serde_json::from_str(&self.ok(args)).unwrap() };
        let mut tree = json(&["cat", "snapshot", snapshot])["tree"]
            .as_str()
            .unwrap()
            .to_string();
        for name in path.strip_prefix("/").unwrap().iter() {
            let nodes = json(&["cat", "tree", &tree]);
            let node = nodes["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| {
                    let bytes: Vec<u8> = serde_json::from_value(n["name"].clone()).unwrap();
                    bytes == name.as_bytes()
                })
                .unwrap_or_else(|| panic!("{} is not in the snapshot", path.display()));
            tree = node["kind"]["Dir"]["subtree"].as_str().unwrap().to_string();
        }
        tree
    }

    pub fn snapshot_ids(&self) -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["snapshots", "--json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }
}

pub fn repo_size(repo: &Path) -> u64 {
    walk_files(repo)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Fails the test, showing the command's stderr, unless it exited 0.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

pub fn set_mtime(path: &Path, secs: i64, nanos: i64) {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(secs, nanos);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Builds a tree with every kind of awkward entry a backup tool meets.
pub fn awkward_tree(root: &Path) {
    let w = |rel: &[u8], data: &[u8], mode: u32| {
        let p = root.join(OsStr::from_bytes(rel));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    w(b"plain.txt", b"hello, world\n", 0o644);
    w(b"with space and 'quotes'", b"spaces", 0o600);
    w("ünïcödé ✓.txt".as_bytes(), b"utf-8 name", 0o640);
    w(b"not-utf8-\xff\xfe.bin", b"latin-1 name", 0o644);
    w(b"new\nline", b"a newline in the name", 0o644);
    w(b"-starts-with-dash", b"dash", 0o644);
    w(b"*glob?[chars]", b"glob characters", 0o644);
    w(b"script.sh", b"#!/bin/sh\necho hi\n", 0o755);
    w(b"setuid-ish", b"special bits", 0o4755);
    w(b"empty", b"", 0o644);
    w(&[b'L'; 255], b"a 255-byte name", 0o644);
    w(b"big/random.bin", &noise(9 * 1024 * 1024 + 123, 1), 0o644);
    w(
        b"big/copy-of-random.bin",
        &noise(9 * 1024 * 1024 + 123, 1),
        0o644,
    );
    w(
        b"big/text.log",
        "line of very compressible text\n"
            .repeat(200_000)
            .as_bytes(),
        0o644,
    );
    let mut deep = PathBuf::from("deep");
    for i in 0..40 {
        deep.push(format!("level-{i:02}"));
    }
    w(
        deep.join("bottom.txt").as_os_str().as_bytes(),
        b"deep file",
        0o644,
    );
    std::fs::create_dir_all(root.join("empty-dir/nested-empty")).unwrap();
    std::fs::set_permissions(
        root.join("empty-dir"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    // symlinks: relative, absolute, dangling, to a directory
    std::os::unix::fs::symlink("plain.txt", root.join("link-relative")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("link-absolute")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("link-dangling")).unwrap();
    std::os::unix::fs::symlink("big", root.join("link-to-dir")).unwrap();
    // hard links: three names, two directories
    w(b"hard/one", b"hard-linked content", 0o644);
    std::fs::create_dir_all(root.join("hard2")).unwrap();
    std::fs::hard_link(root.join("hard/one"), root.join("hard/two")).unwrap();
    std::fs::hard_link(root.join("hard/one"), root.join("hard2/three")).unwrap();
    // sparse: 32 MiB with data at 1 MiB and at 20 MiB
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(root.join("sparse.img")).unwrap();
        f.set_len(32 * 1024 * 1024).unwrap();
        f.write_all_at(&noise(4096, 7), 1024 * 1024).unwrap();
        f.write_all_at(&noise(4096, 8), 20 * 1024 * 1024).unwrap();
    }
    nix::unistd::mkfifo(
        &root.join("a-fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    // fixed, odd mtimes (nanoseconds matter), files first, directories last
    let mut entries = walk_all(root);
    entries.reverse();
    for (i, p) in entries.iter().enumerate() {
        set_mtime(p, 1_500_000_000 + i as i64 * 1000, 123_456_789 + i as i64);
    }
    set_mtime(root, 1_600_000_000, 987_654_321);
}

/// Every entry below `root` (not root itself), parents before children.
pub fn walk_all(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn rec(d: &Path, out: &mut Vec<PathBuf>) {
        let mut es: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        es.sort();
        for p in es {
            out.push(p.clone());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                rec(&p, out);
            }
        }
    }
    rec(root, &mut out);
    out
}

/// What is compared for each entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    kind: &'static str,
    mode: u32,
    mtime: (i64, i64),
    size: u64,
    content: Option<blake3::Hash>,
    link: Option<Vec<u8>>,
    /// index of the entry's hard-link group (by first path), for files with nlink > 1
    link_group: Option<Vec<u8>>,
}

pub fn snapshot_of(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut first_of_inode: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for p in walk_all(root) {
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_file() {
            "file"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let link_group = (ft.is_file() && m.nlink() > 1).then(|| {
            first_of_inode
                .entry(m.ino())
                .or_insert_with(|| rel.clone())
                .clone()
        });
        out.insert(
            rel,
            Entry {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                },
                mtime: (m.mtime(), m.mtime_nsec()),
                size: if ft.is_file() { m.len() } else { 0 },
                content: ft
                    .is_file()
                    .then(|| blake3::hash(&std::fs::read(&p).unwrap())),
                link: ft.is_symlink().then(|| {
                    std::fs::read_link(&p)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                link_group,
            },
        );
    }
    out
}

/// Asserts two trees are identical: names (bytes), kinds, modes, mtimes (ns),
/// sizes, content, symlink targets and hard-link groups.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = snapshot_of(expected);
    let b = snapshot_of(actual);
    let mut diffs = Vec::new();
    for (k, v) in &a {
        match b.get(k) {
            None => diffs.push(format!("missing: {}", String::from_utf8_lossy(k))),
            Some(w) if w != v => diffs.push(format!(
                "differs: {}\n  want {v:?}\n  got  {w:?}",
                String::from_utf8_lossy(k)
            )),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        diffs.push(format!("unexpected: {}", String::from_utf8_lossy(k)));
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Backs up `old.bin`, then `old.bin` + `new.bin`: `new.bin`'s blobs land in
/// packs of their own. Returns the source dir and the data packs of the
/// second backup (the ones to damage in tests).
pub fn two_backups_with_new_data_packs(env: &Env) -> (PathBuf, Vec<PathBuf>) {
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("old.bin"), noise(3_000_000, 1)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let before = walk_files(&env.repo.join("data"));
    std::fs::write(src.join("new.bin"), noise(3_000_000, 2)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let packs = walk_files(&env.repo.join("data"))
        .into_iter()
        .filter(|p| !before.contains(p))
        .filter(|p| {
            env.ok(&["cat", "pack", p.file_name().unwrap().to_str().unwrap()])
                .contains("\"Data\"")
        })
        .collect();
    (src, packs)
}

/// The last line of a command's `--json` output: its summary or report.
/// Long work prints status lines before it (one a second), so the whole
/// output is only one JSON value when the command was quick.
pub fn last_json(out: &str) -> serde_json::Value {
    let last = out.lines().last().expect("a JSON line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"))
}

/// The `--json` line whose `message_type` is `kind` (e.g. prune's
/// `prune_plan`), wherever status lines put it.
pub fn json_message(out: &str, kind: &str) -> serde_json::Value {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message_type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} line in:\n{out}"))
}

/// Writes `count` files of `size` incompressible bytes, `f0`, `f1`, ...,
/// seeded from `seed` (the same arguments give the same files).
pub fn noise_files(dir: &Path, count: usize, size: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        std::fs::write(
            dir.join(format!("f{i}")),
            noise(size, seed * 1000 + i as u64),
        )
        .unwrap();
    }
}

impl Env {
    /// `check` (with `extra` flags) must pass; returns its notes (e.g. packs
    /// no index lists, which an interrupted backup leaves).
    pub fn check_clean(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["check", "--json"];
        args.extend_from_slice(extra);
        let out = self.cairn().args(&args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "check failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = last_json(&stdout);
        v["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    /// Restores snapshot `id` into a fresh directory and compares it with `expected`.
    pub fn assert_restores(&self, id: &str, snapshot_path: &Path, expected: &Path) {
        let target = tempfile::tempdir_in(self.dir.path()).unwrap();
        let (code, err) = self.restore_into(target.path(), &[id]);
        assert_eq!(code, Some(0), "restore {id}: {err}");
        let inner = snapshot_path.strip_prefix("/").unwrap();
        assert_same_tree(expected, &target.path().join(inner));
    }
}

impl Env {
    /// Makes every pack look `secs` older to the storage's clock, as if that
    /// much time had passed since it was written (local repositories only:
    /// object stores set their own times).
    pub fn age_packs(&self, secs: i64) {
        assert!(
            self.remote.is_none(),
            "packs can only be aged on local disk"
        );
        for f in walk_files(&self.repo.join("data")) {
            let m = std::fs::metadata(&f).unwrap().modified().unwrap();
            let t = m.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
            set_mtime(&f, t - secs, 0);
        }
    }

    /// Garbage collection through both phases at once: unindexed packs aged
    /// past prune's minimum (local repositories), one prune condemning with
    /// no grace, a second deleting. Returns the second prune's output.
    pub fn prune_fully(&self, extra: &[&str]) -> String {
        if self.remote.is_none() {
            self.age_packs(2 * 3600);
        }
        let mut args = vec!["prune", "--keep-delete", "0s"];
        args.extend_from_slice(extra);
        self.ok(&args);
        self.ok(&args)
    }
}

/// Runs restic (the reference some tests compare with) on the repository
/// `restic-repo` of `env`; its stdout.
pub fn restic(env: &Env, args: &[&str]) -> String {
    let out = std::process::Command::new("restic")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", env.dir.path())
        .env("TZ", "UTC")
        .env("RESTIC_REPOSITORY", env.path("restic-repo"))
        .env("RESTIC_PASSWORD", PASSWORD)
        .arg("--no-cache")
        .args(args)
        .output()
        .expect("restic must be installed: it is the reference (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "restic {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A local HTTP receiver for notifications: records every request (method,
/// path, headers, body) and answers 200. `start_after` keeps the port
/// closed for a while first (a receiver that is down).
pub struct Receiver {
    pub port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: std::time::Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Receiver {
    pub fn start() -> Receiver {
        Receiver::start_after(std::time::Duration::ZERO)
    }

    pub fn start_after(delay: std::time::Duration) -> Receiver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&requests);
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            for stream in listener.incoming().flatten() {
                if let Some(r) = read_request(stream) {
                    seen.lock().unwrap().push(r);
                }
            }
        });
        Receiver { port, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits up to `secs` for a request that `matches`.
    pub fn wait_for(&self, secs: u64, matches: impl Fn(&Received) -> bool) -> Received {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| matches(r)) {
                return r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no such request within {secs}s; got {:#?}",
                self.requests()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

fn read_request(mut stream: std::net::TcpStream) -> Option<Received> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    Some(Received {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: std::time::Instant::now(),
    })
}

/// Waits until `pid` is stopped (by SIGSTOP or a stop point).
pub fn wait_stopped(pid: nix::unistd::Pid) {
    let start = std::time::Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next();
        if state == Some('T') {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "process {pid} never stopped"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Spawns `cmd ARGS` to stop itself at the named point (`CAIRN_STOP_AT`)
/// and waits until it has.
pub fn stopped_at(
    mut cmd: std::process::Command,
    point: &str,
    args: &[&str],
) -> (std::process::Child, nix::unistd::Pid) {
    let child = cmd
        .env("CAIRN_STOP_AT", point)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    wait_stopped(pid);
    (child, pid)
}

pub fn signal(pid: nix::unistd::Pid, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(pid, sig).unwrap();
}

/// Writes `data` and `trees` (encoded) as one pack each, as given (no
/// validation: hostile trees stay hostile), and an index file listing them.
pub fn plant_blobs(repo: &cairn::repo::Repository, data: Vec<Vec<u8>>, trees: Vec<Vec<u8>>) {
    use cairn::filter::{BlobEncoder, BlobKind};
    use cairn::index::file::{IndexFile, IndexedPack};
    let mut enc = BlobEncoder::new(repo.keys.clone(), 3);
    let mut packs = Vec::new();
    for (kind, blobs) in [(BlobKind::Data, data), (BlobKind::Tree, trees)] {
        if blobs.is_empty() {
            continue;
        }
        let mut b = cairn::pack::PackBuilder::new(kind);
        for bytes in blobs {
            b.push(enc.encode(kind, repo.keys.blob_id(&bytes), &bytes));
        }
        let p = b.finish(&repo.keys.cipher());
        repo.storage
            .write(&cairn::repo::layout::pack(&p.id), p.bytes.clone())
            .unwrap();
        packs.push(IndexedPack {
            id: p.id,
            size: p.bytes.len() as u64,
            blobs: p.blobs,
        });
    }
    repo.save_index_file(&IndexFile {
        packs,
        ..Default::default()
    })
    .unwrap();
}
