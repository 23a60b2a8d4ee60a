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
