//! The library's operations called directly on a `memory://` repository (a
//! cheap key derivation, no process): backup, restore, snapshot lookup,
//! forget, prune and check. Fast, beside the end-to-end tests that drive the
//! binary against real storage.

mod common;

use cairn::backup::progress::Progress;
use cairn::backup::{backup, BackupOptions, ParentChoice};
use cairn::check::{check_with_progress, ReadData};
use cairn::crypto::keyfile::KdfParams;
use cairn::repo::lock::{LockKind, LockOptions};
use cairn::repo::snapshots::{SnapshotFilter, SnapshotLookupError};
use cairn::repo::{init, CacheLocation, InitOptions, Listings, OpenedRepository, Repository};
use cairn::restore::{restore, RestoreOptions};
use cairn::retention::forget::{execute_forget, plan_forget, ForgetOptions};
use cairn::retention::policy::KeepPolicy;
use cairn::retention::prune::{execute_prune, plan_prune, PruneOptions};
use cairn::storage::Storage;
use common::{assert_same_tree, noise_files};
use std::sync::atomic::AtomicBool;

const PASSWORD: &[u8] = b"library";
/// A key derivation that costs nothing (tests make many keys).
const CHEAP_KDF: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

/// A fresh in-memory repository, opened in two steps (key, then index) and
/// holding the maintenance lock, so every operation may run.
fn repository() -> Repository {
    let opened = OpenedRepository::open(new_storage(), PASSWORD).unwrap();
    let repo = opened.load_index(&CacheLocation::None).unwrap();
    repo.lock(
        LockKind::Exclusive,
        &LockOptions {
            retry: std::time::Duration::ZERO,
            command: "library test".into(),
        },
    )
    .unwrap();
    repo
}

/// A new in-memory repository's storage (a cheap key derivation).
fn new_storage() -> Storage {
    let storage = Storage::open("memory://").unwrap();
    let opts = InitOptions {
        kdf: CHEAP_KDF,
        ..Default::default()
    };
    init(&storage, PASSWORD, &opts).unwrap();
    storage
}

fn back_up(repo: &Repository, dir: &std::path::Path) -> cairn::id::Id {
    let opts = BackupOptions {
        paths: vec![dir.to_path_buf()],
        parent: ParentChoice::Auto,
        ..Default::default()
    };
    let outcome = backup(repo, &opts, &AtomicBool::new(false), &Progress::default()).unwrap();
    outcome.snapshot_id.expect("not a dry run")
}

fn restores(repo: &Repository, snapshot: cairn::id::Id, source: &std::path::Path) {
    let target = tempfile::tempdir().unwrap();
    let (_, snap) = repo
        .find_snapshot(&snapshot.to_hex(), &Default::default())
        .unwrap();
    let opts = RestoreOptions {
        target: target.path().to_path_buf(),
        subpath: None,
        ..Default::default()
    };
    let out = restore(repo, snap.tree, &opts).unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_same_tree(
        source,
        &target.path().join(source.strip_prefix("/").unwrap()),
    );
}

fn clean(repo: &Repository) {
    let progress = Progress::default();
    let report = check_with_progress(repo, ReadData::All, &progress).unwrap();
    assert!(report.is_clean(), "{:?}", report.errors);
    // every pack counted, and every byte read
    let seen = progress.view();
    assert_eq!(seen.files_done, seen.total_files);
    assert_eq!(seen.total_files as usize, report.packs);
    assert_eq!(seen.bytes_done, seen.total_bytes);
    assert!(seen.total_bytes > 0);
}

#[test]
fn backup_restore_forget_prune_check() {
    let repo = repository();
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("data");
    noise_files(&dir, 4, 600_000, 1);
    let first = back_up(&repo, &dir);
    restores(&repo, first, &dir);
    clean(&repo);

    // replace half the data; the second snapshot restores the new bytes
    noise_files(&dir, 2, 600_000, 2);
    let second = back_up(&repo, &dir);
    restores(&repo, second, &dir);
    let (latest, _) = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .unwrap();
    assert_eq!(latest, second);

    // keep the newest: the first goes, and prune condemns what only it used
    let plan = plan_forget(
        &repo,
        &ForgetOptions {
            policy: KeepPolicy {
                last: Some(1),
                ..Default::default()
            },
            group_by: None,
            remove: Vec::new(),
            filter: SnapshotFilter::default(),
        },
    )
    .unwrap();
    assert_eq!(execute_forget(&repo, &plan).unwrap(), 1);
    let opts = PruneOptions {
        max_unused_percent: 0.0,
        keep_delete_ns: 0,
        ..Default::default()
    };
    let plan = plan_prune(&repo, &opts).unwrap();
    assert_eq!(plan.stats.snapshots, 1);
    assert!(
        plan.stats.packs_unused + plan.stats.packs_repack >= 1,
        "{:?}",
        plan.stats
    );
    let progress = Progress::default();
    let to_repack = plan.stats.packs_repack as u64;
    let result = execute_prune(&repo, plan, &progress).unwrap();
    assert!(result.packs_condemned >= 1);
    // the display's counters end at their totals
    let seen = progress.view();
    assert!(seen.scan_done);
    assert_eq!(seen.files_done, seen.total_files);
    assert_eq!(seen.bytes_done, seen.total_bytes);
    assert!(seen.total_files >= to_repack, "{seen:?}");
    clean(&repo);
    restores(&repo, second, &dir);
    // memory:// keeps no modification times, so no condemnation's age is
    // known: even with no grace, nothing is deleted (format-spec §14)
    let plan = plan_prune(&repo, &opts).unwrap();
    assert_eq!(plan.stats.packs_expired, 0, "{:?}", plan.stats);
    assert!(plan.stats.packs_waiting >= 1, "{:?}", plan.stats);
    let result = execute_prune(&repo, plan, &Progress::default()).unwrap();
    assert_eq!(result.packs_deleted, 0);
    clean(&repo);
    restores(&repo, second, &dir);
}

#[test]
fn snapshots_are_found_by_the_rules_the_cli_and_the_server_share() {
    let repo = repository();
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("d");
    noise_files(&dir, 1, 1000, 3);
    let a = back_up(&repo, &dir);
    noise_files(&dir, 1, 1000, 4);
    let b = back_up(&repo, &dir);
    let lookup = |spec: &str| repo.find_snapshot(spec, &SnapshotFilter::default());
    assert_eq!(lookup("latest").unwrap().0, b);
    assert_eq!(lookup(&a.to_hex()[..10]).unwrap().0, a);
    let kind = |spec: &str| {
        let e = lookup(spec).unwrap_err();
        match e.downcast_ref::<SnapshotLookupError>() {
            Some(SnapshotLookupError::NotAnId(_)) => "not an id",
            Some(SnapshotLookupError::NotFound(_)) => "not found",
            Some(SnapshotLookupError::Ambiguous(..)) => "ambiguous",
            Some(SnapshotLookupError::NoLatest) => "no latest",
            None => panic!("{spec}: {e:#}"),
        }
    };
    assert_eq!(kind("xyz"), "not an id");
    assert_eq!(kind(&"0".repeat(65)), "not an id");
    // b with its first byte changed: no snapshot has that id
    let absent = if b.to_hex().starts_with("00") {
        "ff"
    } else {
        "00"
    };
    let absent = format!("{absent}{}", &b.to_hex()[2..]);
    assert_eq!(kind(&absent), "not found");
    let other_host = SnapshotFilter {
        hosts: vec!["elsewhere".into()],
        ..Default::default()
    };
    assert!(matches!(
        repo.find_snapshot("latest", &other_host)
            .unwrap_err()
            .downcast_ref(),
        Some(SnapshotLookupError::NoLatest)
    ));
    // `latest=1` keeps the newest of each host and path set
    let newest = repo
        .select_snapshots(&SnapshotFilter::default(), Some(1))
        .unwrap();
    assert_eq!(
        newest.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![b]
    );
}

/// A restore counts what it does (the bar, the JSON status lines and a
/// serve job's progress read these), and a second restore over the same
/// target counts its unchanged files as done at once.
#[test]
fn restore_reports_its_progress() {
    let repo = repository();
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("d");
    noise_files(&dir, 5, 30_000, 8);
    let id = back_up(&repo, &dir);
    let (_, snap) = repo
        .find_snapshot(&id.to_hex(), &Default::default())
        .unwrap();
    let target = tempfile::tempdir().unwrap();
    let opts = RestoreOptions {
        target: target.path().to_path_buf(),
        ..Default::default()
    };
    for round in ["first", "again"] {
        let progress = Progress::default();
        cairn::restore::restore_until(&repo, snap.tree, &opts, &AtomicBool::new(false), &progress)
            .unwrap();
        let v = progress.view();
        assert!(v.scan_done, "{round}");
        assert_eq!((v.total_files, v.files_done), (5, 5), "{round}: {v:?}");
        assert_eq!(
            (v.total_bytes, v.bytes_done),
            (150_000, 150_000),
            "{round}: {v:?}"
        );
    }
}

/// A backup's totals: a first backup counts them with a walk of its own
/// (when asked to), a later one takes its parent's, which hold every file
/// (read or unchanged), so it needs no second walk to show a percentage.
#[test]
fn a_backup_counts_its_totals_once_and_its_successors_estimate_them() {
    let repo = repository();
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("d");
    noise_files(&dir, 6, 20_000, 9);
    let run = |count_totals: bool| {
        let opts = BackupOptions {
            paths: vec![dir.clone()],
            parent: ParentChoice::Auto,
            count_totals,
            ..Default::default()
        };
        let progress = Progress::default();
        let outcome = backup(&repo, &opts, &AtomicBool::new(false), &progress).unwrap();
        (outcome.snapshot.summary, progress.view())
    };
    let (first, v) = run(true);
    assert!(v.scan_done && !v.estimated, "{v:?}");
    assert_eq!((v.total_files, v.total_bytes), (6, 120_000), "{v:?}");
    assert_eq!(first.bytes_processed, 120_000);

    // Each later backup, even one asked to count, shows the last snapshot's
    // totals (no walk counted the file added since), and its unchanged
    // files count as processed.
    let mut last = (6, 120_000);
    for (round, count_totals, added) in [("second", false, 5_000), ("third", true, 7_000)] {
        std::fs::write(dir.join(format!("new-{round}")), vec![7u8; added]).unwrap();
        let (summary, v) = run(count_totals);
        assert!(v.scan_done && v.estimated, "{round}: {v:?}");
        assert_eq!((v.total_files, v.total_bytes), last, "{round}: {v:?}");
        assert!(v.fraction().is_some(), "{round}: {v:?}");
        let files = summary.files_new + summary.files_changed + summary.files_unmodified;
        assert_eq!(files, last.0 + 1, "{round}");
        assert_eq!(summary.bytes_processed, last.1 + added as u64, "{round}");
        last = (files, summary.bytes_processed);
    }
}

/// A new machine's first walk over a snapshot (restore, ls, find): after
/// `prefetch_trees` every tree is in the local cache, so the walk itself
/// sends no request.
#[test]
fn prefetched_trees_leave_a_cold_walk_nothing_to_fetch() {
    let storage = new_storage();
    let writer = OpenedRepository::open(storage.clone(), PASSWORD)
        .unwrap()
        .load_index(&CacheLocation::None)
        .unwrap();
    let src = tempfile::tempdir().unwrap();
    for i in 0..60 {
        let dir = src.path().join(format!("d{}/e{}/f{i}", i % 5, i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x"), i.to_string()).unwrap();
    }
    let id = back_up(&writer, src.path());

    // another host: its own, empty cache
    let reader = OpenedRepository::open(storage.clone(), PASSWORD)
        .unwrap()
        .load_index(&CacheLocation::None)
        .unwrap();
    let (_, snap) = reader
        .find_snapshot(&id.to_hex(), &SnapshotFilter::default())
        .unwrap();
    let before = storage.requests().get;
    let done = reader.prefetch_trees(&[snap.tree]);
    let fetched = storage.requests().get - before;
    assert_eq!(done.failed, 0);
    assert!(done.trees > 60, "{done:?}");
    assert!(fetched > 0, "the cold cache had to fetch them");

    fn walk(repo: &Repository, tree: cairn::id::Id) -> u64 {
        let mut n = 1;
        for node in repo.load_tree(&tree).unwrap().nodes {
            if let cairn::tree::NodeKind::Dir { subtree } = node.kind {
                n += walk(repo, subtree);
            }
        }
        n
    }
    let before = storage.requests().get;
    assert_eq!(walk(&reader, snap.tree), done.trees);
    assert_eq!(
        storage.requests().get,
        before,
        "the walk found every tree cached"
    );
    // prefetching it again costs one look at the cache's mark, no walk
    assert_eq!(reader.prefetch_trees(&[snap.tree]).trees, 0);

    // a tree that cannot be had leaves no mark: a later prefetch walks again
    let other = OpenedRepository::open(storage.clone(), PASSWORD)
        .unwrap()
        .load_index(&CacheLocation::None)
        .unwrap();
    let root = other.load_tree(&snap.tree).unwrap();
    let missing = root
        .nodes
        .iter()
        .find_map(|n| match n.kind {
            cairn::tree::NodeKind::Dir { subtree } => Some(subtree),
            _ => None,
        })
        .unwrap();
    let tree_packs = other
        .index
        .lookup_any(cairn::filter::BlobKind::Tree, &missing)
        .unwrap()
        .unwrap();
    storage
        .delete(&cairn::repo::layout::pack(&tree_packs.pack))
        .unwrap();
    let first = other.prefetch_trees(&[snap.tree]);
    assert!(first.failed > 0, "{first:?}");
    let again = other.prefetch_trees(&[snap.tree]);
    assert!(again.trees > 0 && again.failed > 0, "{again:?}");
}

/// A cached tree that no longer hashes to its id (a damaged cache, or one
/// someone else wrote) is not believed: the tree comes from the repository.
#[test]
fn a_tampered_cached_tree_is_not_used() {
    let repo = repository();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("real"), b"real").unwrap();
    let id = back_up(&repo, dir.path());
    let (_, snap) = repo
        .find_snapshot(&id.to_hex(), &Default::default())
        .unwrap();
    let genuine = repo.load_tree(&snap.tree).unwrap();
    let mut forged = genuine.clone();
    forged.nodes[0].name = b"forged".to_vec();
    repo.index.put_tree(&snap.tree, &forged.encode()).unwrap();
    assert_eq!(repo.load_tree(&snap.tree).unwrap(), genuine);
    // and the cache holds the genuine tree again
    assert_eq!(
        repo.index.tree(&snap.tree).unwrap().unwrap(),
        genuine.encode()
    );
}

/// A tiny deterministic generator, so a failing round can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// One random tree DAG (shared subtrees, names a case-folding or hostile
/// writer would choose, wrong sizes, missing blobs, extreme times and
/// modes), planted as a snapshot; its root tree id.
fn plant_random_trees(repo: &Repository, rng: &mut Rng) -> cairn::id::Id {
    use cairn::tree::{Node, NodeKind, Tree, Xattr};
    let names: [&[u8]; 12] = [
        b"a",
        b"A",
        b"b",
        b"..",
        b".",
        b"x/y",
        b"",
        b"\x1b[2Jevil",
        b"\xff\xfe",
        b"passwd",
        b"very-long-name-very-long-name-very-long-name-very-long-name",
        b"a\0b",
    ];
    let data: Vec<Vec<u8>> = (0..4)
        .map(|i| vec![i as u8; 1 + rng.below(3000) as usize])
        .collect();
    let data_ids: Vec<_> = data.iter().map(|d| repo.keys.blob_id(d)).collect();
    let missing = cairn::id::Id([0xee; 32]);
    let mut trees: Vec<Vec<u8>> = Vec::new();
    let mut tree_ids = vec![];
    for _ in 0..1 + rng.below(12) {
        let mut nodes = Vec::new();
        for _ in 0..rng.below(5) {
            let kind = match rng.below(8) {
                0 | 1 => NodeKind::File {
                    content: (0..rng.below(4))
                        .map(|_| {
                            if rng.below(10) == 0 {
                                missing
                            } else {
                                *rng.pick(&data_ids)
                            }
                        })
                        .collect(),
                },
                2 | 3 if !tree_ids.is_empty() => NodeKind::Dir {
                    subtree: if rng.below(10) == 0 {
                        missing
                    } else {
                        *rng.pick(&tree_ids)
                    },
                },
                4 => NodeKind::Symlink {
                    target: rng.pick(&[&b"/etc"[..], b"../../..", b"a", b""]).to_vec(),
                },
                5 => NodeKind::Fifo,
                6 => NodeKind::CharDevice { rdev: rng.next() },
                _ => NodeKind::Socket,
            };
            nodes.push(Node {
                name: rng.pick(&names).to_vec(),
                kind,
                mode: (rng.next() & 0o7777) as u32,
                uid: rng.next() as u32,
                gid: rng.next() as u32,
                user: String::new(),
                group: String::new(),
                mtime_ns: *rng.pick(&[i64::MIN, -1, 0, 1_700_000_000_000_000_000, i64::MAX]),
                ctime_ns: 0,
                size: *rng.pick(&[0, 1, 3000, u64::MAX]),
                inode: rng.below(3),
                device: 1,
                links: 1 + rng.below(3),
                xattrs: (0..rng.below(2))
                    .map(|_| Xattr {
                        name: rng
                            .pick(&[&b"user.x"[..], b"security.capability", b""])
                            .to_vec(),
                        value: vec![1, 2, 3],
                    })
                    .collect(),
            });
        }
        // mostly in the order a writer keeps; sometimes not (refused on decode)
        if rng.below(4) != 0 {
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|a, b| a.name == b.name);
        }
        let bytes = Tree { nodes }.encode();
        tree_ids.push(repo.keys.blob_id(&bytes));
        trees.push(bytes);
    }
    common::plant_blobs(repo, data, trees);
    let root = *tree_ids.last().unwrap();
    repo.save_snapshot(&cairn::tree::snapshot::Snapshot {
        tree: root,
        paths: vec!["/x".into()],
        ..Default::default()
    })
    .unwrap();
    repo.sync_index().unwrap();
    root
}

/// A structure-aware stand-in for fuzzing the walks: many short rounds of
/// random hostile trees, each run through every operation that walks a
/// snapshot. Each returns its result or an error; none panics, and a
/// restore writes nothing outside its target.
#[test]
fn random_hostile_trees_never_panic_a_walk() {
    use cairn::repo::find::{FindMemo, NamePatterns};
    use cairn::repo::stats::StatsMode;
    let rounds: u64 = std::env::var("CAIRN_TEST_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(300);
    let repo = repository();
    let scratch = tempfile::tempdir().unwrap();
    let mut previous = None;
    let patterns = NamePatterns::new(&["*".into(), "a".into(), "/*/b".into()], true).unwrap();
    for round in 0..rounds {
        let seed = 0x9e37_79b9_7f4a_7c15 ^ round.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut rng = Rng(seed | 1);
        let root = plant_random_trees(&repo, &mut rng);
        let context = format!("round {round} (seed {seed:#x})");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = repo.list_path(root, "/");
            let _ = repo.list_path(root, "/a/b");
            let _ = repo.find_entries(root, &patterns, &mut FindMemo::default());
            for mode in [
                StatsMode::RestoreSize,
                StatsMode::FilesByContents,
                StatsMode::RawData,
                StatsMode::BlobsPerFile,
            ] {
                let _ = repo.stats(&[root], mode);
            }
            if let Some(before) = previous {
                let _ = repo.diff(before, root, true, |_, _| {});
            }
            let _ = cairn::restore::dump::dump_tar(
                &repo,
                root,
                std::path::Path::new(""),
                std::io::sink(),
            );
            let target = scratch.path().join(format!("r{round}")).join("target");
            let opts = RestoreOptions {
                target: target.clone(),
                ..Default::default()
            };
            let _ = restore(&repo, root, &opts);
            // (a restore refused at once made nothing at all)
            let beside: Vec<_> = std::fs::read_dir(target.parent().unwrap())
                .into_iter()
                .flatten()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(
                beside.len() <= 1,
                "restore wrote beside its target: {beside:?}"
            );
        }));
        assert!(outcome.is_ok(), "{context}: a walk panicked");
        previous = Some(root);
    }
}

/// Snapshots are read in batches (many at once from a distant store): a
/// listing of more than one batch comes back whole and in time order, a
/// snapshot removed between listing and reading (a `forget` meanwhile) is
/// skipped, and resolving while the index loads finds what resolving after
/// it does.
#[test]
fn many_snapshots_come_back_whole_and_in_order() {
    let repo = repository();
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("d");
    noise_files(&dir, 2, 1000, 5);
    let first = back_up(&repo, &dir);
    let template = repo.load_snapshot(&first).unwrap();
    let mut made = vec![(template.time_ns, first)];
    for i in 1..=40i64 {
        let mut s = template.clone();
        // out of listing order on purpose: ids are hashes, times go up and down
        s.time_ns = template.time_ns + if i % 2 == 0 { i } else { 100 - i } * 1_000_000_000;
        s.hostname = format!("host-{i}");
        made.push((s.time_ns, repo.save_snapshot(&s).unwrap()));
    }
    made.sort();
    let opened = OpenedRepository::open(repo.storage.clone(), PASSWORD).unwrap();
    let listed = opened.listed_snapshots().unwrap();
    // the newest and two others go after the listing
    let gone = [made[40].1, made[0].1, made[17].1];
    for id in &gone {
        repo.storage
            .delete(&cairn::repo::layout::snapshot(id))
            .unwrap();
    }
    let read = listed.read_all().unwrap();
    let expected: Vec<_> = made
        .iter()
        .map(|(_, id)| *id)
        .filter(|id| !gone.contains(id))
        .collect();
    assert_eq!(read.iter().map(|(id, _)| *id).collect::<Vec<_>>(), expected);
    let any = SnapshotFilter::default();
    assert_eq!(listed.find("latest", &any).unwrap().0, made[39].1);

    let opened = OpenedRepository::open(repo.storage.clone(), PASSWORD).unwrap();
    let listed = Listings::take(&opened.storage).unwrap();
    let (loaded, (latest, snap)) = opened
        .load_index_picking(listed, &CacheLocation::None, |listed| {
            listed.find("latest", &any)
        })
        .unwrap();
    assert_eq!(latest, made[39].1);
    assert!(loaded
        .index
        .contains(cairn::filter::BlobKind::Tree, &snap.tree)
        .unwrap());
}

/// Key files are read in batches: a password opens its key wherever the
/// listing puts it (past the first batch too), junk under `keys/` is
/// skipped, and a password no key takes is refused as a wrong password.
#[test]
fn every_password_opens_its_key_among_many() {
    let storage = new_storage();
    let opened = OpenedRepository::open(storage.clone(), PASSWORD).unwrap();
    let mut keys = vec![(PASSWORD.to_vec(), opened.key_id)];
    for i in 0..40 {
        let password = format!("password number {i}").into_bytes();
        let id =
            cairn::repo::keys::store_key(&storage, &opened.keys, &password, CHEAP_KDF).unwrap();
        keys.push((password, id));
    }
    storage
        .write(
            &format!("keys/{}", "ab".repeat(32)),
            b"not a key file".to_vec(),
        )
        .unwrap();
    for (password, id) in &keys {
        let opened = OpenedRepository::open(storage.clone(), password).unwrap();
        assert_eq!(opened.key_id, *id);
    }
    let e = OpenedRepository::open(storage, b"nobody's password")
        .err()
        .unwrap();
    assert!(
        matches!(
            e.downcast_ref::<cairn::fail::Fail>(),
            Some(cairn::fail::Fail::WrongPassword(_))
        ),
        "{e:#}"
    );
}

/// Ranged reads into one reused buffer: each leaves exactly its range in
/// it, whatever the buffer held before, and a range past the object's end
/// is an error naming the object. Through OpenDAL (memory)
/// and straight from a local directory.
#[test]
fn ranged_reads_into_one_buffer_replace_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for location in ["memory://", dir.path().to_str().unwrap()] {
        let storage = Storage::open(location).unwrap();
        let object: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        storage.write("data/ab/pack", object.clone()).unwrap();
        let mut bytes = vec![0xee; 500_000];
        for range in [0..300_000u64, 10..20, 299_999..300_000, 5..5, 1000..250_000] {
            storage
                .read_range_into("data/ab/pack", range.clone(), &mut bytes)
                .unwrap();
            assert_eq!(
                bytes,
                &object[range.start as usize..range.end as usize],
                "{location} {range:?}"
            );
        }
        let e = storage
            .read_range_into("data/ab/pack", 299_000..300_001, &mut bytes)
            .unwrap_err();
        // (each service words it its own way; it names the object)
        assert!(
            format!("{e:#}").contains("data/ab/pack"),
            "{location}: {e:#}"
        );
    }
}

/// Many objects read at once come back each in its place, a missing or
/// oversized one failing alone with its own error: in memory, and from a
/// local directory (read there without OpenDAL, see `read_local_whole`).
#[test]
fn objects_read_at_once_each_land_in_their_place() {
    let dir = tempfile::tempdir().unwrap();
    for location in ["memory://", dir.path().to_str().unwrap()] {
        let storage = Storage::open(location).unwrap();
        let mut paths = Vec::new();
        for i in 0..40 {
            let path = format!("data/{i:02}");
            storage.write(&path, vec![i as u8; i]).unwrap();
            paths.push(path);
        }
        paths.insert(7, "data/missing".into());
        let read = storage.read_each(&paths, 30);
        assert_eq!(read.len(), 41);
        for (path, result) in paths.iter().zip(&read) {
            match path.strip_prefix("data/").unwrap().parse::<usize>() {
                Ok(i) if i <= 30 => assert_eq!(
                    result.as_ref().unwrap(),
                    &vec![i as u8; i],
                    "{location} {path}"
                ),
                Ok(_) => assert!(
                    matches!(
                        result.as_ref().unwrap_err().downcast_ref(),
                        Some(cairn::storage::StorageError::TooLarge { .. })
                    ),
                    "{location} {path}"
                ),
                Err(_) => assert!(
                    cairn::storage::is_not_found(result.as_ref().unwrap_err()),
                    "{location} {path}"
                ),
            }
        }
        assert_eq!(storage.read("data/30", 30).unwrap(), vec![30u8; 30]);
        assert!(storage.read("data/31", 30).is_err(), "{location}");
    }
}
