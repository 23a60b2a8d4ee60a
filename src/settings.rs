//! The settings file (TOML) that names repositories, sources, schedules and
//! retention: what `cairn serve` runs, and what `cairn backup --config F
//! --source S` runs by hand. See the README's "Automation" section for the
//! documented format.
//!
//! Every problem is reported with the file, the line and what to change:
//! `serve` refuses to start on a bad file rather than half-run it.

use anyhow::{anyhow, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8411";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub repositories: BTreeMap<String, RepositorySettings>,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSettings>,
    /// `[drills.NAME]`: scheduled recoveries of a source's latest backup.
    #[serde(default)]
    pub drills: BTreeMap<String, crate::drill::DrillSettings>,
    /// `[copies.NAME]`: snapshots copied from one repository to another.
    #[serde(default)]
    pub copies: BTreeMap<String, crate::copy::CopySettings>,
    /// `[[notifications]]`: where job and staleness events are sent.
    #[serde(default)]
    pub notifications: Vec<crate::notify::NotificationSettings>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// ADDR:PORT the REST API listens on (default 127.0.0.1:8411).
    pub listen: Option<String>,
    /// File holding the API's bearer token; else `CAIRN_API_TOKEN`.
    pub token_file: Option<PathBuf>,
    /// Where job records are kept across restarts.
    pub state_dir: Option<PathBuf>,
    /// Restores started through the API may only write below these.
    #[serde(default)]
    pub restore_roots: Vec<PathBuf>,
    /// How many finished jobs are remembered (default 1000).
    pub job_history: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositorySettings {
    pub url: String,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    /// Storage settings, as `-o KEY=VALUE` takes them.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    pub cache_dir: Option<PathBuf>,
}

impl RepositorySettings {
    /// The `options` table as `-o KEY=VALUE` pairs.
    pub fn storage_options(&self) -> Result<Vec<(String, String)>> {
        self.options
            .iter()
            .map(|(k, v)| crate::storage::location::parse_option(&format!("{k}={v}")))
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    pub repository: String,
    /// What the source backs up: paths and commands (the default), or a
    /// data service.
    #[serde(default, rename = "type")]
    pub source_type: crate::service::SourceType,
    /// How to reach the service, in its own syntax (a libpq connection
    /// string, mysql client options, a redis URI or socket path).
    pub connection: Option<String>,
    /// The service's databases to back up (sqlite: the database files);
    /// empty: every database the server has.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Directory holding the service's client programs; default: PATH.
    pub tools_dir: Option<PathBuf>,
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Exclude patterns matched ignoring case.
    #[serde(default)]
    pub iexcludes: Vec<String>,
    /// Leave out directories holding a valid CACHEDIR.TAG.
    #[serde(default)]
    pub exclude_caches: bool,
    /// `NAME` or `NAME:HEADER`: leave out directories holding such a file.
    #[serde(default)]
    pub exclude_if_present: Vec<String>,
    /// Leave out files larger than this (e.g. `2G`).
    pub exclude_larger_than: Option<String>,
    #[serde(default)]
    pub one_file_system: bool,
    /// Named streams: each command's stdout becomes the file `/NAME`.
    #[serde(default)]
    pub commands: Vec<CommandSettings>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub host: Option<String>,
    /// A cron expression (5 fields, or 6 with seconds first).
    pub schedule: Option<String>,
    /// No successful backup for this long (e.g. `2h`): a `stale`
    /// notification and `cairn_source_stale` (under `serve`).
    pub stale_after: Option<String>,
    /// Runs before the backup; if it fails, the backup does not run.
    pub before: Option<Vec<String>>,
    /// Runs after the backup, successful or not (CAIRN_BACKUP_STATUS says).
    pub after: Option<Vec<String>>,
    /// Applied after each scheduled backup of this source.
    pub retention: Option<RetentionSettings>,
    /// Variables the hooks and commands keep although they hold storage
    /// credentials (e.g. an `aws` CLI export needs `AWS_ACCESS_KEY_ID`).
    /// cairn's own secrets are never passed on.
    #[serde(default)]
    pub pass_env: Vec<String>,
}

impl SourceSettings {
    /// The data service this source backs up, if it is one.
    pub fn service(&self) -> Option<crate::service::Service> {
        self.source_type.directory()?;
        Some(crate::service::Service {
            kind: self.source_type,
            connection: self.connection.clone(),
            databases: self.databases.clone(),
            tools: crate::service::client::Tools {
                dir: self.tools_dir.clone(),
                env: self.child_env(),
            },
        })
    }

    /// `stale_after` as a duration.
    pub fn stale_after(&self) -> Result<Option<std::time::Duration>> {
        self.stale_after
            .as_deref()
            .map(|s| crate::duration::parse(s).map_err(|e| anyhow!("stale_after {s:?}: {e:#}")))
            .transpose()
    }

    /// The exclude rules of the settings, checked.
    pub fn exclude_options(&self) -> Result<crate::source::exclude::ExcludeOptions> {
        let mut if_present = self.exclude_if_present.clone();
        if self.exclude_caches {
            if_present.push(crate::source::exclude::CACHEDIR_TAG.to_string());
        }
        let larger_than = self
            .exclude_larger_than
            .as_deref()
            .map(|s| crate::size::parse_size(s).map_err(|e| anyhow!("exclude_larger_than: {e:#}")))
            .transpose()?;
        Ok(crate::source::exclude::ExcludeOptions {
            patterns: self.excludes.clone(),
            ipatterns: self.iexcludes.clone(),
            if_present,
            larger_than,
        })
    }

    /// What this source's hooks and commands see of cairn's environment.
    pub fn child_env(&self) -> crate::child_env::ChildEnv {
        crate::child_env::ChildEnv::Configured {
            pass_env: self.pass_env.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSettings {
    pub name: String,
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    pub keep_last: Option<i64>,
    pub keep_hourly: Option<i64>,
    pub keep_daily: Option<i64>,
    pub keep_weekly: Option<i64>,
    pub keep_monthly: Option<i64>,
    pub keep_yearly: Option<i64>,
    pub keep_within: Option<String>,
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// Prune after forgetting.
    #[serde(default)]
    pub prune: bool,
}

impl RetentionSettings {
    /// The counted keep-rules by flag name (`keep-daily`, …).
    pub fn counts(&self) -> [(&'static str, Option<i64>); 6] {
        [
            ("keep-last", self.keep_last),
            ("keep-hourly", self.keep_hourly),
            ("keep-daily", self.keep_daily),
            ("keep-weekly", self.keep_weekly),
            ("keep-monthly", self.keep_monthly),
            ("keep-yearly", self.keep_yearly),
        ]
    }

    /// The policy these settings give, checked by the rules `forget` uses;
    /// errors name the settings field (`keep_daily`).
    pub fn policy(&self) -> Result<crate::retention::policy::KeepPolicy> {
        let within = self
            .keep_within
            .as_deref()
            .map(|w| {
                crate::retention::policy::Within::from_str(w)
                    .map_err(|e| anyhow!("keep_within {w:?}: {e}"))
            })
            .transpose()?;
        let policy = crate::retention::policy::KeepPolicy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within,
            tags: crate::retention::policy::KeepPolicy::tag_sets(&self.keep_tags),
        };
        policy
            .check_counts()
            .map_err(|bad| anyhow!(bad.message(&format!("keep_{}", bad.rule))))?;
        Ok(policy)
    }

    /// Whether any rule is given (else forget would have nothing to apply).
    pub fn has_rules(&self) -> bool {
        self.counts().iter().any(|(_, n)| n.is_some())
            || self.keep_within.is_some()
            || !self.keep_tags.is_empty()
    }

    /// The policy as `cairn forget` arguments, each `--flag=value` so no
    /// value can pass for an option.
    pub fn forget_args(&self) -> Vec<String> {
        let mut args: Vec<String> = self
            .counts()
            .iter()
            .filter_map(|(flag, n)| Some(format!("--{flag}={}", (*n)?)))
            .collect();
        args.extend(
            self.keep_within
                .iter()
                .map(|w| format!("--keep-within={w}")),
        );
        args.extend(self.keep_tags.iter().map(|t| format!("--keep-tag={t}")));
        if self.prune {
            args.push("--prune".into());
        }
        args
    }
}

impl Settings {
    /// Reads and checks a settings file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("cannot read the config file {}: {e}", path.display()))?;
        Settings::parse(&text).map_err(|e| anyhow!("config file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Settings> {
        let settings: Settings =
            toml::from_str(text).map_err(|e| anyhow!("{}", syntax_error(&e)))?;
        settings.validate(text)?;
        Ok(settings)
    }

    fn validate(&self, text: &str) -> Result<()> {
        for (i, n) in self.notifications.iter().enumerate() {
            n.check()
                .map_err(|e| anyhow!("[[notifications]] number {}: {e}", i + 1))?;
            if let Some(s) = n.sources.iter().find(|s| !self.sources.contains_key(*s)) {
                return Err(anyhow!(
                    "[[notifications]] number {}: source {s:?} is not defined",
                    i + 1
                ));
            }
        }
        for (name, drill) in &self.drills {
            let at = Located::new(text, "drills", name);
            if !self.sources.contains_key(&drill.source) {
                return Err(at.error(&format!("source {:?} is not defined", drill.source)));
            }
            if let Some(expr) = &drill.schedule {
                parse_schedule(expr).map_err(|e| at.error(&e.to_string()))?;
            }
            if drill.verify.as_ref().is_some_and(Vec::is_empty) {
                return Err(at.error("`verify` is an empty command"));
            }
        }
        for (name, copy) in &self.copies {
            let at = Located::new(text, "copies", name);
            for repo in [&copy.from, &copy.to] {
                if !self.repositories.contains_key(repo) {
                    return Err(at.error(&format!("repository {repo:?} is not defined")));
                }
            }
            if copy.from == copy.to {
                return Err(at.error("`from` and `to` name the same repository"));
            }
            if let Some(expr) = &copy.schedule {
                parse_schedule(expr).map_err(|e| at.error(&e.to_string()))?;
            }
        }
        for (name, repo) in &self.repositories {
            let at = Located::new(text, "repositories", name);
            if repo.url.trim().is_empty() {
                return Err(at.error("`url` is empty"));
            }
            if repo.password_file.is_some() && repo.password_command.is_some() {
                return Err(at.error("give `password_file` or `password_command`, not both"));
            }
        }
        for (name, source) in &self.sources {
            let at = Located::new(text, "sources", name);
            if !self.repositories.contains_key(&source.repository) {
                return Err(at.error(&format!(
                    "repository {:?} is not defined; add a [repositories.{}] table",
                    source.repository, source.repository
                )));
            }
            validate_service(source).map_err(|e| at.error(&e))?;
            if source.service().is_none() && source.paths.is_empty() && source.commands.is_empty() {
                return Err(at.error("give `paths` or at least one [[…commands]] stream"));
            }
            if let Some(p) = source.paths.iter().find(|p| !p.is_absolute()) {
                return Err(at.error(&format!("path {} is not absolute", p.display())));
            }
            for c in &source.commands {
                if c.command.is_empty() {
                    return Err(at.error(&format!("command of stream {:?} is empty", c.name)));
                }
                if !crate::tree::is_valid_name(c.name.as_bytes()) {
                    return Err(at.error(&format!(
                        "stream name {:?} must be a plain file name",
                        c.name
                    )));
                }
            }
            if source
                .commands
                .iter()
                .enumerate()
                .any(|(i, c)| source.commands[..i].iter().any(|d| d.name == c.name))
            {
                return Err(at.error("two streams have the same name"));
            }
            for (hook, argv) in [("before", &source.before), ("after", &source.after)] {
                if argv.as_ref().is_some_and(Vec::is_empty) {
                    return Err(at.error(&format!("`{hook}` is an empty command")));
                }
            }
            // patterns, marker names and sizes, compiled as a backup would
            source
                .exclude_options()
                .and_then(|o| crate::source::exclude::Excludes::new(&o))
                .map_err(|e| at.error(&format!("{e:#}")))?;
            if let Some(expr) = &source.schedule {
                parse_schedule(expr).map_err(|e| at.error(&e.to_string()))?;
            }
            source
                .stale_after()
                .map_err(|e| at.error(&format!("{e:#}")))?;
            if let Some(r) = &source.retention {
                r.policy()
                    .map_err(|e| at.error(&format!("retention: {e}")))?;
                if !r.has_rules() {
                    return Err(at.error("retention gives no keep rule (keep_last, keep_daily, …)"));
                }
            }
        }
        Ok(())
    }

    pub fn repository(&self, name: &str) -> Result<&RepositorySettings> {
        self.repositories
            .get(name)
            .ok_or_else(|| anyhow!("repository {name:?} is not in the config file"))
    }

    pub fn drill(&self, name: &str) -> Result<&crate::drill::DrillSettings> {
        self.drills.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.drills.keys().map(String::as_str).collect();
            anyhow!(
                "drill {name:?} is not in the config file (it has: {})",
                known.join(", ")
            )
        })
    }

    pub fn source(&self, name: &str) -> Result<&SourceSettings> {
        self.sources.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
            anyhow!(
                "source {name:?} is not in the config file (it has: {})",
                known.join(", ")
            )
        })
    }
}

/// The rules of `type`, `connection`, `databases` and `tools_dir`.
fn validate_service(source: &SourceSettings) -> std::result::Result<(), String> {
    use crate::service::SourceType;
    let kind = source.source_type;
    let Some(directory) = kind.directory() else {
        if source.connection.is_some() || !source.databases.is_empty() || source.tools_dir.is_some()
        {
            return Err(
                "`connection`, `databases` and `tools_dir` are for a data service: \
                        set `type` (postgres, mysql, sqlite, redis)"
                    .into(),
            );
        }
        return Ok(());
    };
    let files_only = !source.paths.is_empty()
        || !source.commands.is_empty()
        || !source.excludes.is_empty()
        || !source.iexcludes.is_empty()
        || source.exclude_caches
        || !source.exclude_if_present.is_empty()
        || source.exclude_larger_than.is_some()
        || source.one_file_system;
    if files_only {
        return Err(format!(
            "a {directory} source backs up the service only: give paths, commands and \
             excludes a source of their own"
        ));
    }
    if source.databases.iter().any(|d| d.trim().is_empty()) {
        return Err("`databases` holds an empty name".into());
    }
    match kind {
        SourceType::Sqlite => {
            if source.databases.is_empty() {
                return Err("a sqlite source needs `databases`: the database files".into());
            }
            if source.connection.is_some() {
                return Err(
                    "a sqlite source has no `connection`: list the files in `databases`".into(),
                );
            }
            let mut files = Vec::new();
            for db in &source.databases {
                if !Path::new(db).is_absolute() {
                    return Err(format!("sqlite database {db:?} is not an absolute path"));
                }
                let file = Path::new(db).file_name();
                if files.contains(&file) {
                    return Err(format!(
                        "two sqlite databases have the file name {:?}: give them sources of their own",
                        file.unwrap_or_default()
                    ));
                }
                files.push(file);
            }
        }
        SourceType::Redis if !source.databases.is_empty() => {
            return Err("a redis source backs up the whole server: leave `databases` out".into());
        }
        _ => {}
    }
    Ok(())
}

/// A cron expression: 5 fields, or 6 with seconds first.
pub fn parse_schedule(expr: &str) -> Result<croner::Cron> {
    croner::Cron::from_str(expr).map_err(|e| {
        anyhow!(
            "schedule {expr:?} is not a cron expression ({e}); e.g. \"0 3 * * *\" is 03:00 daily"
        )
    })
}

/// toml's message already carries "line L, column C" and a caret excerpt.
fn syntax_error(e: &toml::de::Error) -> String {
    e.to_string().trim_end().to_string()
}

/// Where a `[table.name]` starts in the file, for messages.
struct Located {
    what: String,
    line: Option<usize>,
}

impl Located {
    fn new(text: &str, table: &str, name: &str) -> Located {
        let headers = [
            format!("[{table}.{name}]"),
            format!("[{table}.\"{name}\"]"),
            format!("[{table}.{name}."),
        ];
        let line = text.lines().position(|l| {
            let l = l.trim();
            headers.iter().any(|h| l.starts_with(h.as_str()))
        });
        Located {
            what: format!("{table}.{name}"),
            line: line.map(|l| l + 1),
        }
    }

    fn error(&self, problem: &str) -> anyhow::Error {
        match self.line {
            Some(line) => anyhow!("line {line}, [{}]: {problem}", self.what),
            None => anyhow!("[{}]: {problem}", self.what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:9000"
restore_roots = ["/srv/restore"]

[repositories.main]
url = "/srv/backup"
password_file = "/etc/cairn/password"

[sources.db]
repository = "main"
schedule = "0 3 * * *"
tags = ["db"]
after = ["touch", "/tmp/done"]

[[sources.db.commands]]
name = "db.sql"
command = ["pg_dump", "app"]

[sources.db.retention]
keep_daily = 7
prune = true
"#;

    #[test]
    fn a_full_file_parses() {
        let s = Settings::parse(GOOD).unwrap();
        let db = s.source("db").unwrap();
        assert_eq!(db.commands[0].name, "db.sql");
        assert_eq!(db.retention.as_ref().unwrap().keep_daily, Some(7));
        assert_eq!(s.server.restore_roots, vec![PathBuf::from("/srv/restore")]);
    }

    fn error_of(text: &str) -> String {
        format!("{:#}", Settings::parse(text).unwrap_err())
    }

    #[test]
    fn an_unknown_field_is_named_with_its_line() {
        let e = error_of(&GOOD.replace("tags = [\"db\"]", "tagz = [\"db\"]"));
        assert!(e.contains("unknown field `tagz`"), "{e}");
        assert!(e.contains("line 13"), "{e}");
    }

    #[test]
    fn a_bad_schedule_is_named_with_its_line() {
        let e = error_of(&GOOD.replace("0 3 * * *", "every day"));
        assert!(e.contains("line 10, [sources.db]"), "{e}");
        assert!(e.contains("not a cron expression"), "{e}");
    }

    #[test]
    fn a_missing_repository_is_named() {
        let e = error_of(&GOOD.replace("repository = \"main\"", "repository = \"other\""));
        assert!(e.contains("repository \"other\" is not defined"), "{e}");
    }

    #[test]
    fn a_source_needs_something_to_back_up() {
        let text = "[repositories.r]\nurl = \"/x\"\n[sources.s]\nrepository = \"r\"\n";
        assert!(error_of(text).contains("give `paths`"));
    }

    #[test]
    fn retention_follows_forgets_rules() {
        let e = error_of(&GOOD.replace("keep_daily = 7", "keep_daily = -5"));
        assert!(e.contains("[sources.db]") && e.contains("line "), "{e}");
        assert!(e.contains("keep_daily = -5: give a count"), "{e}");
        let e = error_of(&GOOD.replace("keep_daily = 7", "keep_within = \"7x\""));
        assert!(e.contains("keep_within \"7x\""), "{e}");
        assert!(Settings::parse(&GOOD.replace("keep_daily = 7", "keep_daily = -1")).is_ok());
    }

    #[test]
    fn data_service_sources_are_checked() {
        let base = "[repositories.r]\nurl = \"/x\"\n[sources.s]\nrepository = \"r\"\n";
        let with = |extra: &str| format!("{base}{extra}\n");
        let pg = Settings::parse(&with("type = \"postgres\"\ndatabases = [\"app\"]")).unwrap();
        let service = pg.source("s").unwrap().service().unwrap();
        assert_eq!(service.kind.directory(), Some("postgres"));
        assert!(Settings::parse(&with("type = \"redis\"")).is_ok());
        let cases = [
            ("type = \"oracle\"", "unknown variant `oracle`"),
            (
                "type = \"postgres\"\npaths = [\"/etc\"]",
                "backs up the service only",
            ),
            ("type = \"sqlite\"", "needs `databases`"),
            (
                "type = \"sqlite\"\ndatabases = [\"app.db\"]",
                "not an absolute path",
            ),
            (
                "type = \"sqlite\"\ndatabases = [\"/a/app.db\", \"/b/app.db\"]",
                "two sqlite databases have the file name",
            ),
            (
                "type = \"redis\"\ndatabases = [\"0\"]",
                "leave `databases` out",
            ),
            ("paths = [\"/etc\"]\nconnection = \"x\"", "set `type`"),
            ("type = \"mysql\"\ndatabases = [\" \"]", "an empty name"),
        ];
        for (extra, message) in cases {
            let e = error_of(&with(extra));
            assert!(e.contains(message), "{extra}: {e}");
        }
    }

    #[test]
    fn schedules_take_five_or_six_fields() {
        assert!(parse_schedule("*/5 * * * *").is_ok());
        assert!(parse_schedule("*/2 * * * * *").is_ok());
        assert!(parse_schedule("61 * * * *").is_err());
    }
}
