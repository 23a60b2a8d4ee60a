//! Repository URLs → the OpenDAL service and its configuration. Pure: the
//! environment comes in as a lookup function, so every rule is unit-tested.
//!
//! ```text
//! /path or ./path          local directory (OpenDAL fs)
//! memory://                in-process memory (tests)
//! s3://BUCKET[/PREFIX]     S3 or compatible; AWS_* variables, -o s3.KEY=VALUE
//! swift://CONTAINER[/PREFIX] OpenStack Swift; SWIFT_ENDPOINT + SWIFT_TOKEN, or v1
//!                          auth from ST_AUTH/ST_USER/ST_KEY or OS_AUTH_URL/OS_USERNAME/OS_PASSWORD
//! opendal:SCHEME           any OpenDAL service; its settings as -o KEY=VALUE
//! ```

use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where a repository lives, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Memory,
    Remote(Remote),
}

/// An OpenDAL service with its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub scheme: String,
    pub config: BTreeMap<String, String>,
    /// Swift v1 credentials to trade for an endpoint and token first.
    pub swift_auth: Option<SwiftV1Auth>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwiftV1Auth {
    pub url: String,
    pub user: String,
    pub key: String,
}

/// Config keys whose values are credentials: never printed.
pub const SECRET_KEYS: &[&str] = &[
    "secret_access_key",
    "session_token",
    "access_key_id",
    "token",
    "password",
    "key",
    "secret",
    "credential",
    "account_key",
    "sas_token",
];

impl Remote {
    /// Every credential value in the configuration, for redaction.
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .config
            .iter()
            .filter(|(k, _)| SECRET_KEYS.iter().any(|s| k.contains(s)))
            .map(|(_, v)| v.clone())
            .collect();
        if let Some(a) = &self.swift_auth {
            out.push(a.key.clone());
        }
        out.retain(|s| s.len() >= 4);
        out
    }
}

/// The directory of a local repository URL; None for any other kind.
pub fn local_path(url: &str) -> Option<PathBuf> {
    match resolve(url, &[], &|_| None) {
        Ok(Location::Local(path)) => Some(path),
        _ => None,
    }
}

/// `options` are the `-o KEY=VALUE` pairs; `env` looks up a variable.
pub fn resolve(
    url: &str,
    options: &[(String, String)],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Location> {
    if url == "memory://" {
        return Ok(Location::Memory);
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = split_bucket(rest, "s3://BUCKET/PREFIX")?;
        return Ok(Location::Remote(s3(bucket, prefix, options, env)?));
    }
    if let Some(rest) = url.strip_prefix("swift://") {
        let (container, prefix) = split_bucket(rest, "swift://CONTAINER/PREFIX")?;
        return Ok(Location::Remote(swift(container, prefix, options, env)?));
    }
    if let Some(scheme) = url.strip_prefix("opendal:") {
        let scheme = scheme.trim_start_matches("//");
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("repository URL {url:?}: expected opendal:SCHEME (e.g. opendal:gcs) with its settings as -o key=value");
        }
        let config = scoped_options(options, scheme, true);
        return Ok(Location::Remote(Remote {
            scheme: scheme.to_string(),
            config,
            swift_auth: None,
        }));
    }
    if url.contains("://") {
        bail!(
            "unsupported repository URL {url:?}: use a local path, s3://BUCKET/PREFIX, \
             swift://CONTAINER/PREFIX, opendal:SCHEME (with -o key=value) or memory://"
        );
    }
    Ok(Location::Local(PathBuf::from(url)))
}

fn split_bucket<'a>(rest: &'a str, form: &str) -> Result<(&'a str, String)> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        bail!("repository URL: the bucket is missing (expected {form})");
    }
    Ok((bucket, format!("/{}", prefix.trim_matches('/'))))
}

/// `-o` options for `scheme`: `SCHEME.key=value` always, bare `key=value`
/// too when `bare` (the generic `opendal:` form). Dashes become underscores,
/// OpenDAL's spelling.
fn scoped_options(
    options: &[(String, String)],
    scheme: &str,
    bare: bool,
) -> BTreeMap<String, String> {
    let prefix = format!("{scheme}.");
    options
        .iter()
        .filter_map(|(k, v)| match k.strip_prefix(&prefix) {
            Some(key) => Some((key, v)),
            None if bare && !k.contains('.') => Some((k.as_str(), v)),
            None => None,
        })
        .map(|(k, v)| (k.replace('-', "_"), v.clone()))
        .collect()
}

fn first(env: &dyn Fn(&str) -> Option<String>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| env(n).filter(|v| !v.is_empty()))
}

fn s3(
    bucket: &str,
    prefix: String,
    options: &[(String, String)],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Remote> {
    let mut config = BTreeMap::new();
    config.insert("bucket".to_string(), bucket.to_string());
    config.insert("root".to_string(), prefix);
    let from_env = [
        ("endpoint", &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"][..]),
        ("region", &["AWS_REGION", "AWS_DEFAULT_REGION"][..]),
        ("access_key_id", &["AWS_ACCESS_KEY_ID"][..]),
        ("secret_access_key", &["AWS_SECRET_ACCESS_KEY"][..]),
        ("session_token", &["AWS_SESSION_TOKEN"][..]),
    ];
    for (key, names) in from_env {
        if let Some(v) = first(env, names) {
            config.insert(key.to_string(), v);
        }
    }
    let mut path_style = None;
    for (k, v) in scoped_options(options, "s3", false) {
        if k == "path_style" {
            path_style = Some(parse_bool("s3.path-style", &v)?);
        } else {
            config.insert(k, v);
        }
    }
    // A custom endpoint (MinIO, Ceph, Swift's s3api, ...) rarely has
    // bucket DNS names; AWS itself prefers virtual-host style.
    let custom_endpoint = config.contains_key("endpoint");
    if !path_style.unwrap_or(custom_endpoint) {
        config.insert("enable_virtual_host_style".into(), "true".into());
    }
    config
        .entry("region".into())
        .or_insert_with(|| "us-east-1".into());
    Ok(Remote {
        scheme: "s3".into(),
        config,
        swift_auth: None,
    })
}

fn swift(
    container: &str,
    prefix: String,
    options: &[(String, String)],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Remote> {
    let mut config = BTreeMap::new();
    config.insert("container".to_string(), container.to_string());
    config.insert("root".to_string(), prefix);
    if let Some(v) = first(env, &["SWIFT_ENDPOINT", "OS_STORAGE_URL"]) {
        config.insert("endpoint".into(), v);
    }
    if let Some(v) = first(env, &["SWIFT_TOKEN", "OS_AUTH_TOKEN"]) {
        config.insert("token".into(), v);
    }
    config.extend(scoped_options(options, "swift", false));
    let mut swift_auth = None;
    if !(config.contains_key("endpoint") && config.contains_key("token")) {
        let url = first(env, &["ST_AUTH", "OS_AUTH_URL"]);
        let user = first(env, &["ST_USER", "OS_USERNAME"]);
        let key = first(env, &["ST_KEY", "OS_PASSWORD"]);
        match (url, user, key) {
            (Some(url), Some(user), Some(key)) => {
                if !url.trim_end_matches('/').ends_with("/v1.0") && !url.contains("/auth/v1") {
                    bail!(
                        "Swift auth URL {url}: only v1 auth (…/auth/v1.0) is supported; for \
                         Keystone, set SWIFT_ENDPOINT (the storage URL) and SWIFT_TOKEN \
                         (e.g. from `openstack token issue`)"
                    );
                }
                swift_auth = Some(SwiftV1Auth { url, user, key });
            }
            _ => {
                return Err(anyhow!(
                    "Swift needs credentials: SWIFT_ENDPOINT and SWIFT_TOKEN, or v1 auth \
                     (ST_AUTH, ST_USER, ST_KEY, or OS_AUTH_URL, OS_USERNAME, OS_PASSWORD)"
                ))
            }
        }
    }
    Ok(Remote {
        scheme: "swift".into(),
        config,
        swift_auth,
    })
}

fn parse_bool(what: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => bail!("{what}={v}: expected true or false"),
    }
}

/// Parses one `-o KEY=VALUE`.
pub fn parse_option(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => bail!("option {text:?}: expected KEY=VALUE (e.g. s3.region=eu-west-1)"),
    }
}

/// The storage settings in `CAIRN_STORAGE_OPTIONS`, one `KEY=VALUE` per
/// line (how `serve` hands them to its jobs, out of `ps`'s sight). A bad
/// line is named by its number only: its text may hold a secret.
pub fn options_from_env() -> Result<Vec<(String, String)>> {
    let var = crate::child_env::STORAGE_OPTIONS_VAR;
    let Some(text) = std::env::var_os(var) else {
        return Ok(Vec::new());
    };
    let text = text
        .into_string()
        .map_err(|_| anyhow::anyhow!("{var} is not valid UTF-8"))?;
    options_from_lines(&text).map_err(|n| {
        anyhow::anyhow!("{var}, line {n}: expected KEY=VALUE (e.g. s3.region=eu-west-1)")
    })
}

/// `KEY=VALUE` lines, blank ones skipped; Err(line number) of a bad one.
fn options_from_lines(text: &str) -> std::result::Result<Vec<(String, String)>, usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_option(l).map_err(|_| i + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_come_one_per_line_and_a_bad_line_is_named_by_number() {
        assert_eq!(
            options_from_lines("s3.region=x\n\ns3.secret_access_key=a=b\n"),
            Ok(vec![
                ("s3.region".into(), "x".into()),
                ("s3.secret_access_key".into(), "a=b".into())
            ])
        );
        assert_eq!(options_from_lines(""), Ok(vec![]));
        assert_eq!(options_from_lines("a=1\nsecretwithoutkey"), Err(2));
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn remote(loc: Location) -> Remote {
        match loc {
            Location::Remote(r) => r,
            other => panic!("expected a remote, got {other:?}"),
        }
    }

    #[test]
    fn s3_from_the_standard_variables_with_path_style_for_custom_endpoints() {
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t-value"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
        ]);
        let r = remote(resolve("s3://bkt/some/prefix/", &[], &env).unwrap());
        assert_eq!(r.scheme, "s3");
        assert_eq!(r.config["bucket"], "bkt");
        assert_eq!(r.config["root"], "/some/prefix");
        assert_eq!(r.config["endpoint"], "http://127.0.0.1:9000");
        assert_eq!(r.config["region"], "us-east-1");
        assert!(!r.config.contains_key("enable_virtual_host_style"));
        assert!(r.secrets().contains(&"s3cr3t-value".to_string()));
    }

    #[test]
    fn s3_options_override_the_environment() {
        let env = env_of(&[("AWS_REGION", "eu-west-1")]);
        let opts = [
            ("s3.region".to_string(), "eu-central-1".to_string()),
            ("s3.path-style".to_string(), "true".to_string()),
            ("swift.token".to_string(), "ignored".to_string()),
        ];
        let r = remote(resolve("s3://bkt", &opts, &env).unwrap());
        assert_eq!(r.config["region"], "eu-central-1");
        assert_eq!(r.config["root"], "/");
        assert!(!r.config.contains_key("enable_virtual_host_style"));
        assert!(!r.config.contains_key("token"));
        // AWS without a custom endpoint: virtual-host style
        let r = remote(resolve("s3://bkt", &[], &env).unwrap());
        assert_eq!(r.config["enable_virtual_host_style"], "true");
    }

    #[test]
    fn swift_token_or_v1_auth() {
        let env = env_of(&[
            ("SWIFT_ENDPOINT", "http://h/v1/AUTH_a"),
            ("SWIFT_TOKEN", "tok-1234"),
        ]);
        let r = remote(resolve("swift://c/p", &[], &env).unwrap());
        assert_eq!(r.config["container"], "c");
        assert_eq!(r.config["token"], "tok-1234");
        assert!(r.swift_auth.is_none());

        let env = env_of(&[
            ("OS_AUTH_URL", "http://h/auth/v1.0"),
            ("OS_USERNAME", "acct:user"),
            ("OS_PASSWORD", "pw-secret"),
        ]);
        let r = remote(resolve("swift://c", &[], &env).unwrap());
        assert_eq!(r.swift_auth.as_ref().unwrap().user, "acct:user");
        assert!(r.secrets().contains(&"pw-secret".to_string()));

        let keystone = env_of(&[
            ("OS_AUTH_URL", "http://h:5000/v3"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "p"),
        ]);
        let e = resolve("swift://c", &[], &keystone)
            .unwrap_err()
            .to_string();
        assert!(e.contains("only v1 auth"), "{e}");
        let none = env_of(&[]);
        let e = resolve("swift://c", &[], &none).unwrap_err().to_string();
        assert!(e.contains("SWIFT_TOKEN"), "{e}");
    }

    #[test]
    fn generic_opendal_schemes_take_bare_and_scoped_options() {
        let opts = [
            ("root".to_string(), "/r".to_string()),
            ("gcs.bucket".to_string(), "b".to_string()),
            ("s3.region".to_string(), "x".to_string()),
        ];
        let r = remote(resolve("opendal:gcs", &opts, &env_of(&[])).unwrap());
        assert_eq!(r.scheme, "gcs");
        assert_eq!(r.config.len(), 2);
        assert_eq!(r.config["bucket"], "b");
    }

    #[test]
    fn other_forms() {
        let env = env_of(&[]);
        assert_eq!(resolve("memory://", &[], &env).unwrap(), Location::Memory);
        assert_eq!(
            resolve("/srv/repo", &[], &env).unwrap(),
            Location::Local(PathBuf::from("/srv/repo"))
        );
        assert!(resolve("ftp://x", &[], &env).is_err());
        assert!(resolve("s3://", &[], &env).is_err());
        assert!(resolve("opendal:", &[], &env).is_err());
        assert!(parse_option("novalue").is_err());
        assert_eq!(parse_option("a=b=c").unwrap(), ("a".into(), "b=c".into()));
    }
}
