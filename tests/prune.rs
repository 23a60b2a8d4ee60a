//! `prune`: space comes back, nothing needed goes, a dry run changes nothing.

mod common;

use common::*;

#[test]
fn prune_after_replacing_half_the_data_returns_to_a_fresh_backups_size() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    noise_files(&src, 12, 2_000_000, 1);
    let s = src.to_str().unwrap();
    env.ok(&["backup", s]);
    // replace half of the files
    for i in 0..6 {
        std::fs::write(src.join(format!("f{i}")), noise(2_000_000, 900 + i)).unwrap();
    }
    env.ok(&["backup", s]);
    let before = env.repo_bytes();

    // forget + dry run: nothing changes on storage (snapshots aside)
    env.ok(&["forget", "--keep-last", "1"]);
    let listed = env.objects("");
    let plan = env.ok(&["prune", "--dry-run"]);
    assert!(
        plan.contains("would repack") || plan.contains("would delete"),
        "{plan}"
    );
    assert_eq!(env.objects(""), listed, "a dry run changed the repository");

    // the first phase condemns (here with 8 s of grace): nothing is
    // deleted yet
    env.ok(&["prune", "--keep-delete", "8s"]);
    assert!(
        env.repo_bytes() >= before,
        "prune deleted at once, with grace"
    );
    let notes = env.check_clean(&[]);
    assert!(notes.iter().any(|n| n.contains("condemned")), "{notes:?}");
    // the grace a pack was condemned with holds even if a later prune's is shorter
    env.ok(&["prune", "--keep-delete", "0s"]);
    assert!(
        env.repo_bytes() >= before,
        "a pack condemned for 8 s was deleted early"
    );
    std::thread::sleep(std::time::Duration::from_secs(9));
    env.prune_fully(&[]);
    let after = env.repo_bytes();

    let fresh = Env::new();
    fresh.init();
    fresh.ok(&["backup", s]);
    let fresh_size = fresh.repo_bytes();
    assert!(
        after as f64 <= fresh_size as f64 * 1.10,
        "after prune {after} bytes, a fresh backup {fresh_size} (before prune {before})"
    );
    // the six replaced files were 12 MB; prune may leave up to
    // --max-unused (5% of the repository) unused in packs it keeps, and
    // how much depends on which pack each chunk landed in
    assert!(
        before - after + after / 20 >= 11_000_000,
        "prune freed too little: {before} → {after}"
    );

    // what is left is complete and exact
    assert!(env.check_clean(&["--read-data"]).is_empty());
    let id = env.snapshot_ids().pop().unwrap();
    env.assert_restores(&id, &src, &src);
    // a second prune has nothing left to do
    let again = env.ok(&["prune", "--json", "--keep-delete", "0s"]);
    let plan = json_message(&again, "prune_plan");
    assert_eq!(plan["plan"]["packs_repack"], 0, "{again}");
    assert_eq!(plan["plan"]["packs_unused"], 0, "{again}");
}

#[test]
fn prune_keeps_everything_any_snapshot_needs() {
    let env = Env::new();
    env.init();
    let a = env.path("a");
    let b = env.path("b");
    awkward_tree(&a);
    noise_files(&b, 4, 1_500_000, 7);
    env.ok(&["backup", a.to_str().unwrap()]);
    env.ok(&["backup", b.to_str().unwrap()]);
    std::fs::write(b.join("f0"), noise(1_500_000, 70)).unwrap();
    env.ok(&["backup", b.to_str().unwrap()]);
    let ids = env.snapshot_ids();
    // forget the middle snapshot only: the other two must stay whole
    env.ok(&["forget", &ids[1]]);
    let before = env.repo_bytes();
    env.prune_fully(&["--max-unused", "0%"]);
    assert!(env.repo_bytes() < before);
    assert!(env.check_clean(&["--read-data"]).is_empty());
    env.assert_restores(&ids[0], &a, &a);
    env.assert_restores(&ids[2], &b, &b);
}

#[test]
fn prune_with_no_snapshots_empties_the_repository_and_refuses_a_damaged_one() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    noise_files(&src, 3, 1_000_000, 3);
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["backup", src.to_str().unwrap(), "--force"]);
    // damage: delete a data pack; prune must stop and change nothing
    let victim = env.objects("data/").into_keys().next().unwrap();
    env.delete_object(&victim);
    let listed = env.objects("");
    let out = env.cairn().arg("prune").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing") && err.contains("repair index"),
        "{err}"
    );
    assert_eq!(env.objects(""), listed);

    // forget everything: prune leaves no data behind
    env.ok(&["repair", "index"]);
    let ids = env.snapshot_ids();
    let mut args = vec!["forget"];
    args.extend(ids.iter().map(String::as_str));
    env.ok(&args);
    env.prune_fully(&[]);
    assert!(env.objects("data/").is_empty());
    assert_eq!(env.objects("index/").len(), 1);
    assert!(env.check_clean(&[]).is_empty());
}
