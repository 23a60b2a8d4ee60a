//! `cairn key`: several passwords open the same data, a changed password
//! stops working, and the key in use cannot be removed by mistake. Runs on
//! whichever backend the suite runs (local disk, S3, Swift).

mod common;

use common::*;
use serde_json::Value;

/// `cairn ARGS` opened with `password`: (exit code, stdout, stderr).
fn with_password(env: &Env, password: &str, args: &[&str]) -> (i32, String, String) {
    let out = env
        .cairn()
        .env("CAIRN_PASSWORD", password)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn keys(env: &Env, password: &str) -> Vec<Value> {
    let (code, out, err) = with_password(env, password, &["key", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn keys_are_added_rotated_and_removed_without_losing_access() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), noise(300_000, 9)).unwrap();
    env.ok(&["backup", data.to_str().unwrap()]);
    let first = keys(&env, PASSWORD);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["current"], true);

    // a second password opens the same snapshots
    let second_file = env.path("second");
    std::fs::write(&second_file, "second password\n").unwrap();
    env.ok(&[
        "key",
        "add",
        "--new-password-file",
        second_file.to_str().unwrap(),
    ]);
    let listed = keys(&env, "second password");
    assert_eq!(listed.len(), 2);
    let current: Vec<&Value> = listed.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_ne!(current[0]["id"], first[0]["id"], "opened with the new key");
    let (code, out, _) = with_password(&env, "second password", &["snapshots", "--json"]);
    assert_eq!(code, 0);
    let ids: Vec<Value> = serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(ids.len(), 1);

    // the key in use is not removed; another one is
    let first_id = first[0]["id"].as_str().unwrap();
    let (code, _, err) = with_password(&env, PASSWORD, &["key", "remove", &first_id[..10]]);
    assert_ne!(code, 0);
    assert!(err.contains("key passwd"), "{err}");
    let (code, _, err) =
        with_password(&env, "second password", &["key", "remove", &first_id[..10]]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = with_password(&env, PASSWORD, &["snapshots"]);
    assert_eq!(
        code, 12,
        "the removed key's password no longer opens: {err}"
    );

    // passwd replaces the key in use
    let third_file = env.path("third");
    std::fs::write(&third_file, "third password\n").unwrap();
    let (code, _, err) = with_password(
        &env,
        "second password",
        &[
            "key",
            "passwd",
            "--new-password-file",
            third_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = with_password(&env, "second password", &["snapshots"]);
    assert_eq!(code, 12, "the old password stops working");
    assert_eq!(keys(&env, "third password").len(), 1);
    let target = env.path("restored");
    let (code, _, err) = with_password(
        &env,
        "third password",
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&data, &target.join(data.strip_prefix("/").unwrap()));
}

#[test]
fn bad_new_passwords_and_ids_change_nothing() {
    let env = Env::new();
    env.init();
    let empty = env.path("empty");
    std::fs::write(&empty, "\n").unwrap();
    let (code, _, err) = with_password(
        &env,
        PASSWORD,
        &["key", "add", "--new-password-file", empty.to_str().unwrap()],
    );
    assert_ne!(code, 0);
    assert!(err.contains("empty password"), "{err}");
    // no terminal to ask on: said, not hung
    let (code, _, err) = with_password(&env, PASSWORD, &["key", "passwd"]);
    assert_ne!(code, 0);
    assert!(err.contains("--new-password-file"), "{err}");
    for bad in ["zz", "", "0000000000"] {
        let (code, _, err) = with_password(&env, PASSWORD, &["key", "remove", bad]);
        assert_ne!(code, 0, "{bad:?}");
        assert!(err.contains("key"), "{bad:?}: {err}");
    }
    assert_eq!(keys(&env, PASSWORD).len(), 1);
}
