//! What the commands cairn runs for the user (hooks, stream commands,
//! `restore --to-command`, the password command) may see of cairn's own
//! environment. A `pg_dump` or a hook script has no business holding the
//! repository password, the API token or the keys to the bucket.

use std::process::Command;

/// cairn's own secrets: never passed on.
pub const CAIRN_SECRETS: &[&str] = &["CAIRN_PASSWORD", "CAIRN_API_TOKEN", STORAGE_OPTIONS_VAR];

/// Storage settings (`-o KEY=VALUE` lines) handed to a cairn child process
/// by `serve`, so that no credential appears in its argv.
pub const STORAGE_OPTIONS_VAR: &str = "CAIRN_STORAGE_OPTIONS";

/// Variables the storage services read credentials from.
pub const STORAGE_CREDENTIALS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "SWIFT_TOKEN",
    "SWIFT_KEY",
    "ST_KEY",
    "OS_PASSWORD",
    "OS_AUTH_TOKEN",
    "AZURE_STORAGE_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
];

/// Which secrets of cairn's environment a command it runs may see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ChildEnv {
    /// A command given on cairn's own command line: the user composed its
    /// environment there, so only cairn's own secrets are taken out.
    #[default]
    AdHoc,
    /// A command of a settings file (and so of `serve`): neither cairn's
    /// secrets nor storage credentials, but the variables it names in
    /// `pass_env`.
    Configured { pass_env: Vec<String> },
}

impl ChildEnv {
    /// Removes what the command must not see from its environment.
    pub fn apply(&self, cmd: &mut Command) {
        let pass: &[String] = match self {
            ChildEnv::AdHoc => &[],
            ChildEnv::Configured { pass_env } => pass_env,
        };
        let storage: &[&str] = match self {
            ChildEnv::AdHoc => &[],
            ChildEnv::Configured { .. } => STORAGE_CREDENTIALS,
        };
        for var in CAIRN_SECRETS.iter().chain(storage) {
            if !pass.iter().any(|p| p == var) {
                cmd.env_remove(var);
            }
        }
    }
}

/// Whether a storage option's value is a secret: shown as `***` wherever
/// cairn reports settings (job records, logs, API answers).
pub fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let public = key.ends_with("key_id") || key.ends_with("_id") || key.ends_with("endpoint");
    !public
        && [
            "secret",
            "token",
            "password",
            "passwd",
            "credential",
            "key",
            "sas",
        ]
        .iter()
        .any(|word| key.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_after(policy: &ChildEnv) -> String {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo \"$CAIRN_PASSWORD|$CAIRN_API_TOKEN|$AWS_SECRET_ACCESS_KEY|$HOME\"",
        ])
        .env("CAIRN_PASSWORD", "pw")
        .env("CAIRN_API_TOKEN", "tok")
        .env("AWS_SECRET_ACCESS_KEY", "aws")
        .env("HOME", "/home/x");
        policy.apply(&mut cmd);
        String::from_utf8(cmd.output().unwrap().stdout).unwrap()
    }

    #[test]
    fn commands_never_see_cairns_secrets_and_configured_ones_no_credentials() {
        assert_eq!(env_after(&ChildEnv::AdHoc), "||aws|/home/x\n");
        let configured = ChildEnv::Configured { pass_env: vec![] };
        assert_eq!(env_after(&configured), "|||/home/x\n");
        let passing = ChildEnv::Configured {
            pass_env: vec!["AWS_SECRET_ACCESS_KEY".into()],
        };
        assert_eq!(env_after(&passing), "||aws|/home/x\n");
    }

    #[test]
    fn secret_options_are_told_by_their_names() {
        for k in [
            "s3.secret_access_key",
            "swift.token",
            "password",
            "azblob.account_key",
            "sas_token",
        ] {
            assert!(is_secret_option(k), "{k}");
        }
        for k in [
            "s3.access_key_id",
            "s3.endpoint",
            "s3.region",
            "s3.path-style",
            "bucket",
        ] {
            assert!(!is_secret_option(k), "{k}");
        }
    }
}
