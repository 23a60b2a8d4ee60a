//! `cairn generate` and `cairn version`: completions and man pages come
//! from the same definitions the binary parses.

mod common;

use common::*;

#[test]
fn completions_and_man_pages_name_every_command() {
    let env = Env::new();
    let dir = env.path("out");
    std::fs::create_dir_all(&dir).unwrap();
    let (bash, zsh, fish, man) = (
        dir.join("cairn.bash"),
        dir.join("_cairn"),
        dir.join("cairn.fish"),
        dir.join("man"),
    );
    env.ok(&[
        "generate",
        "--bash-completion",
        bash.to_str().unwrap(),
        "--zsh-completion",
        zsh.to_str().unwrap(),
        "--fish-completion",
        fish.to_str().unwrap(),
        "--man",
        man.to_str().unwrap(),
    ]);
    for file in [&bash, &zsh, &fish] {
        let text = std::fs::read_to_string(file).unwrap();
        for command in ["backup", "restore", "diff", "find", "key", "exclude-caches"] {
            assert!(text.contains(command), "{} lacks {command}", file.display());
        }
    }
    // bash can load it
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p cairn", bash.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let page = std::fs::read_to_string(man.join("cairn.1")).unwrap();
    assert!(page.contains(".TH cairn"), "{page}");
    assert!(man.join("cairn-backup.1").is_file());
    let backup = std::fs::read_to_string(man.join("cairn-backup.1")).unwrap();
    assert!(backup.contains("exclude\\-larger\\-than") || backup.contains("exclude-larger-than"));

    let out = env.cairn().arg("generate").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to generate"));
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["version", "--json"])).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["format_version"], 1);
}

/// `cairn cache`: the cache directory is tagged, listed, and old caches
/// go while the one in use stays.
#[test]
fn caches_are_tagged_listed_and_cleaned_up() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), b"x").unwrap();
    env.ok(&["backup", data.to_str().unwrap()]);
    let tag = std::fs::read_to_string(env.cache.join("CACHEDIR.TAG")).unwrap();
    assert!(tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55"));
    // an old cache of a repository long gone
    let old = env.cache.join("ab".repeat(32));
    std::fs::create_dir_all(old.join("index")).unwrap();
    std::fs::write(old.join("index/000001.sst"), vec![0u8; 4096]).unwrap();
    set_mtime(&old.join("index/000001.sst"), 1_500_000_000, 0);
    set_mtime(&old.join("index"), 1_500_000_000, 0);
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["cache", "--json"])).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[1]["repository_id"], "ab".repeat(32));
    assert!(list[1]["days_unused"].as_u64().unwrap() > 1000);
    let removed: serde_json::Value =
        serde_json::from_str(&env.ok(&["cache", "--cleanup", "--json"])).unwrap();
    assert_eq!(removed.as_array().unwrap().len(), 1, "{removed}");
    assert!(!old.exists());
    // the repository's own cache stays, and works
    env.ok(&["snapshots"]);
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["cache", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
}
