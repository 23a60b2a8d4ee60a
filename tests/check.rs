//! `check` finds each kind of damage and names what it affects.

mod common;
use common::*;
use std::path::PathBuf;

fn damaged_setup(env: &Env) -> Vec<PathBuf> {
    two_backups_with_new_data_packs(env).1
}

fn check(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let out = env.cairn().arg("check").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn a_healthy_repository_checks_clean_with_and_without_reading_data() {
    let env = Env::new();
    damaged_setup(&env);
    for args in [
        &[][..],
        &["--read-data"],
        &["--read-data-subset", "1/2"],
        &["--read-data-subset", "2/2"],
        &["--read-data-subset", "50%"],
    ] {
        let (code, out) = check(&env, args);
        assert_eq!(code, Some(0), "check {args:?}: {out}");
        assert!(out.contains("no errors were found"), "{out}");
    }
}

#[test]
fn a_flipped_byte_is_found_by_read_data_and_names_the_file() {
    let env = Env::new();
    let packs = damaged_setup(&env);
    let victim = &packs[0];
    let mut bytes = std::fs::read(victim).unwrap();
    bytes[200] ^= 0x01; // inside the first blob, header intact
    std::fs::write(victim, bytes).unwrap();
    let (code, out) = check(&env, &[]);
    assert_eq!(
        code,
        Some(0),
        "a flipped blob byte is invisible to the structural check: {out}"
    );
    let (code, out) = check(&env, &["--read-data"]);
    assert_eq!(code, Some(1), "{out}");
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(
        out.contains(name) && out.contains("does not match its name"),
        "{out}"
    );
    assert!(out.contains("new.bin") && !out.contains("old.bin"), "{out}");
    assert_unaffected_file_restores(&env);
}

/// `old.bin` lives in packs of the first backup: damage to the second
/// backup's packs must not stop its restore.
fn assert_unaffected_file_restores(env: &Env) {
    let src = env.path("src");
    let target = env.path("unaffected");
    let (code, err) = env.restore_into(&target, &["latest", "--include", "old.bin"]);
    assert_eq!(code, Some(0), "{err}");
    let restored = target.join(src.strip_prefix("/").unwrap()).join("old.bin");
    assert!(std::fs::read(restored).unwrap() == std::fs::read(src.join("old.bin")).unwrap());
}

#[test]
fn truncated_and_deleted_packs_are_reported() {
    let env = Env::new();
    let packs = damaged_setup(&env);
    let bytes = std::fs::read(&packs[0]).unwrap();
    std::fs::write(&packs[0], &bytes[..bytes.len() - 100]).unwrap();
    let (code, out) = check(&env, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("truncated") && out.contains("new.bin"),
        "{out}"
    );

    std::fs::remove_file(&packs[0]).unwrap();
    let (code, out) = check(&env, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("is missing") && out.contains(packs[0].file_name().unwrap().to_str().unwrap()),
        "{out}"
    );
    assert_unaffected_file_restores(&env);
}

#[test]
fn a_deleted_index_file_leaves_blobs_unindexed_and_packs_unreferenced() {
    let env = Env::new();
    damaged_setup(&env);
    let newest = walk_files(&env.repo.join("index"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    std::fs::remove_file(newest).unwrap();
    let (code, out) = check(&env, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not in any index"), "{out}");
    assert!(out.contains("packs are in no index"), "{out}");

    // the packs still say what they hold: repair brings the index back
    let out = env.ok(&["repair", "index"]);
    assert!(out.contains("replaced"), "{out}");
    assert!(env.check_clean(&["--read-data"]).is_empty());
    let src = env.path("src");
    let id = env.snapshot_ids().pop().unwrap();
    env.assert_restores(&id, &src, &src);
}

#[test]
fn repair_keeps_what_the_old_index_said_of_a_pack_the_storage_failed_to_deliver() {
    // The fault: one pack the storage refuses to hand over (EACCES for an
    // unprivileged repair), as a passing network error would. The pack is
    // whole; dropping it from the index would lose its data.
    if !is_root() || remote_backend() {
        return; // needs root to run repair as another user
    }
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let (src, packs) = two_backups_with_new_data_packs(&env);
    let refused = &packs[0];
    // the unprivileged user may use the repository and the cache
    let status = std::process::Command::new("chmod")
        .args(["-R", "a+rwX"])
        .args([&env.repo, &env.cache])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(refused, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(assert_cmd::cargo::cargo_bin("cairn"))
        .args(["--json", "repair", "index"])
        .env_clear()
        .envs(env.env_vars())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = last_json(&stdout);
    let kept = v["report"]["kept_from_old_index"].as_array().unwrap();
    let name = refused.file_name().unwrap().to_str().unwrap();
    assert_eq!(kept.len(), 1, "{v}");
    assert!(kept[0][0].as_str().unwrap().ends_with(name), "{v}");
    assert!(
        v["report"]["unreadable"].as_array().unwrap().is_empty(),
        "{v}"
    );

    // once the storage answers again, nothing was lost
    std::fs::set_permissions(refused, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(env.check_clean(&["--read-data"]).is_empty());
    let id = env.snapshot_ids().pop().unwrap();
    env.assert_restores(&id, &src, &src);
}
