//! The REST API: JSON in and out, bearer-token auth, and the OpenAPI
//! document built from the same types and handlers (`/openapi.json`).
//!
//! Reads (listings, lookups, directory listings) are answered in-process
//! from the repositories serve holds open; everything that changes a
//! repository or writes files becomes a job ([`super::jobs`]) whose typed
//! operation the handler builds from the checked request.

use super::jobs::{Job, JobKind, JobState, Operation, StartError, Trigger};
use super::{reads, specs, ServerState};
use crate::check::ReadData;
use crate::id::Id;
use crate::repo::browse::EntryListing;
use crate::repo::snapshots::{SnapshotFilter, SnapshotListing, SnapshotLookupError};
use crate::repo::{OpenedRepository, PathLookupError};
use crate::restore::{MetadataChoices, Overwrite, RestoreOptions, Selection, XattrChoice};
use crate::retention::forget::{ForgetOptions, GroupBy};
use crate::retention::prune::PruneOptions;
use crate::service::ServiceRestoreOptions;
use crate::settings::RetentionSettings;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{header, request::Parts, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use utoipa::{IntoParams, OpenApi, ToSchema};

pub(super) type AppState = State<Arc<ServerState>>;

/// A request still unanswered after this gets 408 (long work runs as jobs,
/// so only a storage that stopped answering takes this long).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// One log line per request: method, path, status and time taken (never
/// the query string or headers, which may carry filters or the token).
async fn log_request(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let status = response.status();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let level = if status.is_server_error() {
        log::Level::Warn
    } else {
        log::Level::Info
    };
    log::log!(level, "{method} {path} {} {ms:.1} ms", status.as_u16());
    response
}

/// Every route, written once: the router, the OpenAPI document's paths and
/// the check that each route's document entry has its method and path are
/// all made from this one list.
macro_rules! api_routes {
    (
        public: [$($pmethod:ident $ppath:literal => $phandler:path),* $(,)?],
        protected: [$($method:ident $path:literal => $handler:path),* $(,)?] $(,)?
    ) => {
        /// (method, path) of every route.
        #[cfg(test)]
        const ROUTES: &[(&str, &str)] = &[
            $((stringify!($pmethod), $ppath),)*
            $((stringify!($method), $path),)*
        ];

        pub fn router(state: Arc<ServerState>) -> Router {
            let protected = Router::new()
                $(.route($path, $method($handler)))*
                .route_layer(axum::middleware::from_fn_with_state(
                    Arc::clone(&state),
                    require_token,
                ));
            Router::new()
                $(.route($ppath, $pmethod($phandler)))*
                .merge(protected)
                .fallback(|| async { ApiError::not_found("no such endpoint; see /openapi.json") })
                .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    REQUEST_TIMEOUT,
                ))
                .layer(axum::middleware::from_fn(log_request))
                .with_state(state)
        }

        #[derive(OpenApi)]
        #[openapi(
            info(
                title = "cairn",
                description = "Backups, restores and retention of the repositories and sources named in cairn's settings file. Every operation that changes a repository runs as a job; follow it at /jobs/{id}."
            ),
            paths($($phandler,)* $($handler,)*),
            modifiers(&BearerAuth),
            security(("bearer" = []))
        )]
        pub struct ApiDoc;
    };
}

api_routes! {
    public: [
        get "/healthz" => healthz,
        get "/openapi.json" => openapi,
    ],
    protected: [
        get "/metrics" => metrics,
        get "/repositories" => list_repositories,
        get "/repositories/{name}/snapshots" => list_snapshots,
        get "/repositories/{name}/snapshots/{snapshot}" => get_snapshot,
        get "/repositories/{name}/snapshots/{snapshot}/ls" => list_entries,
        get "/repositories/{name}/diff" => reads::diff,
        get "/repositories/{name}/find" => reads::find,
        get "/repositories/{name}/stats" => reads::stats,
        post "/repositories/{name}/restore" => start_restore,
        post "/repositories/{name}/forget" => start_forget,
        post "/repositories/{name}/prune" => start_prune,
        post "/repositories/{name}/check" => start_check,
        get "/sources" => list_sources,
        post "/sources/{name}/backup" => start_backup,
        post "/sources/{name}/restore" => start_service_restore,
        post "/drills/{name}/run" => start_drill,
        post "/copies/{name}/run" => start_copy,
        get "/jobs" => list_jobs,
        get "/jobs/{id}" => get_job,
        post "/jobs/{id}/cancel" => cancel_job,
    ],
}

struct BearerAuth;

/// The bearer scheme, and its 401 on every operation that needs it (all
/// but those marked `security(())`), written once here instead of on each.
impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let unauthorized = ResponseBuilder::new()
            .description("Missing or wrong token")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ErrorBody",
                    ))))
                    .build(),
            )
            .build();
        for item in doc.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post];
            for op in operations.into_iter().flatten() {
                let public = op.security.as_ref().is_some_and(|s| {
                    serde_json::to_value(s).is_ok_and(|v| v == serde_json::json!([{}]))
                });
                if !public {
                    op.responses
                        .responses
                        .insert("401".into(), RefOr::T(unauthorized.clone()));
                }
            }
        }
    }
}

// ---- errors and extractors -------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do.
    error: String,
}

pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub(super) fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, m)
    }
    pub(super) fn not_found(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, m)
    }
    pub(super) fn internal(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> ApiError {
        match e {
            StartError::Conflict(why) => ApiError::new(StatusCode::CONFLICT, why),
            StartError::Other(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

/// A JSON body; malformed JSON or an unknown field is a 400 naming it. An
/// empty body counts as `{}`.
pub struct JsonBody<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(body)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("request body: {e}")))
    }
}

/// Query parameters; a bad one is a JSON 400 like every other error.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

async fn require_token(State(state): AppState, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.trim().as_bytes(), state.token.as_bytes()) => {
            next.run(req).await
        }
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "wrong API token").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing API token: send `Authorization: Bearer TOKEN`",
        )
        .into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---- health, document, metrics ----------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: String,
    jobs_running: usize,
}

/// Liveness (no token needed).
#[utoipa::path(get, path = "/healthz", tag = "server", security(()),
    responses((status = 200, description = "The server is up", body = Health)))]
async fn healthz(State(state): AppState) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        jobs_running: state.jobs.running_count(),
    })
}

/// This document (no token needed).
#[utoipa::path(get, path = "/openapi.json", tag = "server", security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Prometheus metrics: per source the last success time, duration and bytes
/// added; per repository its snapshots, size and last check.
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(State(state): AppState) -> Response {
    let mut repos = Vec::new();
    for name in state.settings.repositories.keys() {
        let summary = match opened(&state, name).await {
            Ok(repo) => blocking(move || repo.summary()).await.ok(),
            Err(_) => None,
        };
        repos.push((name.clone(), summary));
    }
    let text = super::metrics::render(&state, &repos);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

// ---- repositories and snapshots ------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct RepositoryInfo {
    name: String,
    url: String,
}

/// The repositories of the settings file.
#[utoipa::path(get, path = "/repositories", tag = "repositories",
    responses(
        (status = 200, description = "Configured repositories", body = Vec<RepositoryInfo>)))]
async fn list_repositories(State(state): AppState) -> Json<Vec<RepositoryInfo>> {
    Json(
        state
            .settings
            .repositories
            .iter()
            .map(|(name, r)| RepositoryInfo {
                name: name.clone(),
                url: r.url.clone(),
            })
            .collect(),
    )
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SnapshotQuery {
    /// Only snapshots of this host.
    host: Option<String>,
    /// Only snapshots with this tag ("a,b": both).
    tag: Option<String>,
    /// Only snapshots that include this backed-up path.
    path: Option<String>,
    /// Only the newest N per host and paths.
    latest: Option<u32>,
}

pub(super) fn repository_name(state: &ServerState, name: &str) -> Result<(), ApiError> {
    if state.settings.repositories.contains_key(name) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "no repository {name:?} in the settings file"
        )))
    }
}

/// Repository `name`, opened once: the key derivation runs on the first
/// request only.
async fn opened(state: &Arc<ServerState>, name: &str) -> Result<Arc<OpenedRepository>, ApiError> {
    repository_name(state, name)?;
    let repos = Arc::clone(&state.repos);
    let name = name.to_string();
    blocking(move || repos.opened(&name)).await
}

/// Runs repository work off the async threads (storage calls block).
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("the request's worker failed: {e}")))?
        .map_err(lookup_error)
}

/// A failed lookup: the same rules as the CLI's, as HTTP statuses.
fn lookup_error(e: anyhow::Error) -> ApiError {
    match e.downcast_ref::<SnapshotLookupError>() {
        Some(SnapshotLookupError::NotFound(_) | SnapshotLookupError::NoLatest) => {
            ApiError::not_found(format!("{e:#}"))
        }
        Some(SnapshotLookupError::NotAnId(_) | SnapshotLookupError::Ambiguous(..)) => {
            ApiError::bad_request(format!("{e:#}"))
        }
        None if e.downcast_ref::<PathLookupError>().is_some() => {
            ApiError::not_found(format!("{e:#}"))
        }
        None => ApiError::internal(format!("{e:#}")),
    }
}

impl SnapshotQuery {
    fn filter(&self) -> Result<SnapshotFilter, ApiError> {
        filter_of(&self.host, &self.tag, &self.path)
    }
}

/// The snapshot filter of a query's `host`, `tag` and `path`, by the CLI's
/// rules (`--host`, `--tag`, `--path`).
pub(super) fn filter_of(
    host: &Option<String>,
    tag: &Option<String>,
    path: &Option<String>,
) -> Result<SnapshotFilter, ApiError> {
    // no host, tag or path can hold one
    if [host, tag, path]
        .iter()
        .any(|v| v.as_deref().is_some_and(|v| v.contains('\0')))
    {
        return Err(ApiError::bad_request(
            "host, tag and path filters cannot contain a NUL byte",
        ));
    }
    Ok(SnapshotFilter {
        hosts: host.iter().cloned().collect(),
        tags: tag.iter().cloned().collect(),
        paths: path.iter().cloned().collect(),
    })
}

/// Snapshots of a repository, oldest first.
#[utoipa::path(get, path = "/repositories/{name}/snapshots", tag = "repositories",
    params(("name" = String, Path, description = "Repository name"), SnapshotQuery),
    responses(
        (status = 200, description = "Snapshots", body = Vec<SnapshotListing>),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 404, description = "No such repository", body = ErrorBody),
        (status = 500, description = "The repository could not be read", body = ErrorBody)))]
async fn list_snapshots(
    State(state): AppState,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<SnapshotQuery>,
) -> Result<Json<Vec<SnapshotListing>>, ApiError> {
    let filter = q.filter()?;
    let repo = opened(&state, &name).await?;
    let latest = q.latest.map(|n| n as usize);
    let list = blocking(move || repo.select_snapshots(&filter, latest)).await?;
    Ok(Json(
        list.iter()
            .map(|(id, s)| SnapshotListing::new(id, s))
            .collect(),
    ))
}

/// `latest` (narrowed by `filter`), an id or a unique id prefix → the one
/// snapshot it names, by the CLI's rules.
pub(super) async fn resolve_snapshot(
    state: &Arc<ServerState>,
    repository: &str,
    spec: &str,
    filter: SnapshotFilter,
) -> Result<SnapshotListing, ApiError> {
    let repo = opened(state, repository).await?;
    let spec = spec.to_string();
    let (id, snapshot) = blocking(move || repo.find_snapshot(&spec, &filter)).await?;
    Ok(SnapshotListing::new(&id, &snapshot))
}

/// One snapshot, by id prefix or `latest` (with `host`, `tag`, `path`).
#[utoipa::path(get, path = "/repositories/{name}/snapshots/{snapshot}", tag = "repositories",
    params(("name" = String, Path, description = "Repository name"),
           ("snapshot" = String, Path, description = "`latest` or an id prefix"),
           SnapshotQuery),
    responses(
        (status = 200, description = "The snapshot", body = SnapshotListing),
        (status = 400, description = "Not a snapshot id, or an ambiguous prefix", body = ErrorBody),
        (status = 404, description = "No such repository or snapshot", body = ErrorBody),
        (status = 500, description = "The repository could not be read", body = ErrorBody)))]
async fn get_snapshot(
    State(state): AppState,
    Path((name, snapshot)): Path<(String, String)>,
    QueryParams(q): QueryParams<SnapshotQuery>,
) -> Result<Json<SnapshotListing>, ApiError> {
    if q.latest.is_some() {
        return Err(ApiError::bad_request("`latest=N` applies to listings only"));
    }
    let filter = q.filter()?;
    Ok(Json(
        resolve_snapshot(&state, &name, &snapshot, filter).await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LsQuery {
    /// A path inside the snapshot (default `/`).
    path: Option<String>,
}

/// The entries of one directory of a snapshot (or the one entry a path to
/// anything else names), from the trees serve keeps cached.
#[utoipa::path(get, path = "/repositories/{name}/snapshots/{snapshot}/ls", tag = "repositories",
    params(("name" = String, Path, description = "Repository name"),
           ("snapshot" = String, Path, description = "`latest` or an id prefix"),
           LsQuery),
    responses(
        (status = 200, description = "Entries", body = Vec<EntryListing>),
        (status = 400, description = "Not a snapshot id, or an ambiguous prefix", body = ErrorBody),
        (status = 404, description = "No such repository, snapshot or path", body = ErrorBody),
        (status = 500, description = "The repository could not be read", body = ErrorBody)))]
async fn list_entries(
    State(state): AppState,
    Path((name, snapshot)): Path<(String, String)>,
    QueryParams(q): QueryParams<LsQuery>,
) -> Result<Json<Vec<EntryListing>>, ApiError> {
    let path = q.path.unwrap_or_default();
    if path.contains('\0') {
        return Err(ApiError::bad_request("path cannot contain a NUL byte"));
    }
    let found = resolve_snapshot(&state, &name, &snapshot, SnapshotFilter::default()).await?;
    let tree = parse_id(&found.tree)?;
    let repos = Arc::clone(&state.repos);
    let entries = blocking(move || repos.with_index(&name)?.list_path(tree, &path)).await?;
    Ok(Json(entries))
}

// ---- repository jobs -------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// `latest` or an id prefix.
    snapshot: String,
    /// Absolute directory below one of `server.restore_roots`.
    target: String,
    /// Restore only these paths or patterns.
    #[serde(default)]
    include: Vec<String>,
    /// Skip these paths or patterns.
    #[serde(default)]
    exclude: Vec<String>,
    /// Read the restored files back and compare.
    #[serde(default)]
    verify: bool,
    /// Existing files: `always`, `if-changed` (default), `if-newer`, `never`.
    overwrite: Option<String>,
    /// Remove what the restored directories hold that the snapshot does not
    /// (not with include or exclude).
    #[serde(default)]
    delete: bool,
    /// Leave ownership alone (setuid and setgid bits are then dropped).
    #[serde(default)]
    no_owner: bool,
    /// Do not create device nodes and fifos.
    #[serde(default)]
    no_special: bool,
    /// Restore no extended attributes.
    #[serde(default)]
    no_xattrs: bool,
    /// Restore only the extended attributes whose name matches one of these
    /// globs (e.g. `user.*`).
    #[serde(default)]
    xattr_include: Vec<String>,
}

/// Starts a restore job.
#[utoipa::path(post, path = "/repositories/{name}/restore", tag = "jobs",
    params(("name" = String, Path, description = "Repository name")),
    request_body = RestoreRequest,
    responses(
        (status = 202, description = "Job started", body = Job),
        (status = 400, description = "Bad request (the message names the field)", body = ErrorBody),
        (status = 404, description = "No such repository or snapshot", body = ErrorBody),
        (status = 409, description = "The repository is busy with a conflicting job", body = ErrorBody),
        (status = 500, description = "The repository could not be read", body = ErrorBody)))]
async fn start_restore(
    State(state): AppState,
    Path(name): Path<String>,
    JsonBody(r): JsonBody<RestoreRequest>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    repository_name(&state, &name)?;
    let target = restore_target(&state, &r.target)?;
    let snapshot = resolve_snapshot(&state, &name, &r.snapshot, SnapshotFilter::default()).await?;
    let overwrite = match &r.overwrite {
        Some(o) => o
            .parse::<Overwrite>()
            .map_err(|e| ApiError::bad_request(format!("overwrite: {e}")))?,
        None => Overwrite::default(),
    };
    if r.delete && !(r.include.is_empty() && r.exclude.is_empty()) {
        return Err(ApiError::bad_request(
            "delete cannot be combined with include or exclude",
        ));
    }
    let xattrs = XattrChoice::chosen(r.no_xattrs, &r.xattr_include)
        .map_err(|e| ApiError::bad_request(format!("xattr_include: {e}")))?;
    let description = format!(
        "restore of snapshot {} to {}",
        snapshot.short_id,
        target.display()
    );
    let operation = Operation::Restore {
        snapshot: parse_id(&snapshot.id)?,
        tree: parse_id(&snapshot.tree)?,
        options: RestoreOptions {
            target,
            subpath: None,
            selection: Selection {
                includes: r.include,
                excludes: r.exclude,
            },
            dry_run: false,
            overwrite,
            delete: r.delete,
            metadata: MetadataChoices {
                owner: !r.no_owner,
                special: !r.no_special,
                xattrs,
            },
        },
        verify: r.verify,
    };
    start(&state, specs::repository_job(&name, operation, description))
}

pub(super) fn parse_id(hex: &str) -> Result<Id, ApiError> {
    Id::from_hex(hex).ok_or_else(|| ApiError::internal(format!("{hex:?} is not an id")))
}

/// A file to restore (a service's database file): its directory is
/// confined as a restore target is; the file itself may exist (it is
/// replaced by a rename, never written through).
fn restore_file_target(state: &ServerState, target: &str) -> Result<PathBuf, ApiError> {
    let path = std::path::Path::new(target);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(ApiError::bad_request(format!(
            "target {target:?} names no file"
        )));
    };
    let dir = dir
        .to_str()
        .ok_or_else(|| ApiError::bad_request("target is not UTF-8"))?;
    Ok(restore_target(state, dir)?.join(name))
}

/// A restore target must be below a root the settings allow, reached
/// without following links, and clear of cairn's own data: the API must not
/// become a way to overwrite /etc (`crate::restore::confine`).
fn restore_target(state: &ServerState, target: &str) -> Result<PathBuf, ApiError> {
    use crate::restore::confine::{confine_target, Protected};
    let settings = &state.settings;
    let repos: Vec<(String, PathBuf)> = settings
        .repositories
        .iter()
        .flat_map(|(name, r)| {
            let repo = crate::storage::location::local_path(&r.url)
                .map(|p| (format!("repository {name:?}"), p));
            let cache = r
                .cache_dir
                .clone()
                .map(|p| (format!("the cache of {name:?}"), p));
            repo.into_iter().chain(cache)
        })
        .collect();
    let mut protected: Vec<Protected<'_>> = repos
        .iter()
        .map(|(what, path)| Protected { what, path })
        .collect();
    protected.push(Protected {
        what: "the server's state directory",
        path: &state.state_dir,
    });
    confine_target(target, &settings.server.restore_roots, &protected)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ForgetRequest {
    keep_last: Option<i64>,
    keep_hourly: Option<i64>,
    keep_daily: Option<i64>,
    keep_weekly: Option<i64>,
    keep_monthly: Option<i64>,
    keep_yearly: Option<i64>,
    /// e.g. `7d`, `1y2m`.
    keep_within: Option<String>,
    #[serde(default)]
    keep_tags: Vec<String>,
    /// Only snapshots of these hosts.
    #[serde(default)]
    hosts: Vec<String>,
    /// Only snapshots with these tags.
    #[serde(default)]
    tags: Vec<String>,
    /// Only snapshots that include these paths.
    #[serde(default)]
    paths: Vec<String>,
    /// Forget exactly these snapshots (ids) instead of applying a policy.
    #[serde(default)]
    snapshots: Vec<String>,
    /// Prune afterwards.
    #[serde(default)]
    prune: bool,
    #[serde(default)]
    dry_run: bool,
}

/// Starts a forget job: a keep-policy, or a list of snapshots.
#[utoipa::path(post, path = "/repositories/{name}/forget", tag = "jobs",
    params(("name" = String, Path, description = "Repository name")),
    request_body = ForgetRequest,
    responses(
        (status = 202, description = "Job started", body = Job),
        (status = 400, description = "Bad request (the message names the field)", body = ErrorBody),
        (status = 404, description = "No such repository or snapshot", body = ErrorBody),
        (status = 409, description = "The repository is busy with another job", body = ErrorBody),
        (status = 500, description = "The repository could not be read", body = ErrorBody)))]
async fn start_forget(
    State(state): AppState,
    Path(name): Path<String>,
    JsonBody(r): JsonBody<ForgetRequest>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    repository_name(&state, &name)?;
    let policy = RetentionSettings {
        keep_last: r.keep_last,
        keep_hourly: r.keep_hourly,
        keep_daily: r.keep_daily,
        keep_weekly: r.keep_weekly,
        keep_monthly: r.keep_monthly,
        keep_yearly: r.keep_yearly,
        keep_within: r.keep_within.clone(),
        keep_tags: r.keep_tags.clone(),
        prune: r.prune,
    };
    policy
        .policy()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    match (policy.has_rules(), r.snapshots.is_empty()) {
        (true, false) => {
            return Err(ApiError::bad_request(
                "give a keep-policy (keep_last, keep_daily, …) or `snapshots`, not both",
            ))
        }
        (false, true) => {
            return Err(ApiError::bad_request(
                "give a keep-policy (keep_last, keep_daily, …) or the `snapshots` to forget",
            ))
        }
        _ => {}
    }
    let mut remove = Vec::new();
    for spec in &r.snapshots {
        if spec == "latest" {
            return Err(ApiError::bad_request("snapshots: give ids, not `latest`"));
        }
        let found = resolve_snapshot(&state, &name, spec, SnapshotFilter::default()).await?;
        remove.push(parse_id(&found.id)?);
    }
    let description = if remove.is_empty() {
        "forget by keep-policy".to_string()
    } else {
        format!("forget of {} snapshots", remove.len())
    };
    let operation = Operation::Forget {
        options: ForgetOptions {
            policy: policy
                .policy()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
            group_by: Some(GroupBy::default()),
            remove,
            filter: SnapshotFilter {
                hosts: r.hosts,
                tags: r.tags,
                paths: r.paths,
            },
        },
        dry_run: r.dry_run,
        prune: r.prune,
    };
    start(&state, specs::repository_job(&name, operation, description))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PruneRequest {
    /// Repack packs with more unused space than this, e.g. `5%`.
    max_unused: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// Starts a prune job.
#[utoipa::path(post, path = "/repositories/{name}/prune", tag = "jobs",
    params(("name" = String, Path, description = "Repository name")),
    request_body = PruneRequest,
    responses(
        (status = 202, description = "Job started", body = Job),
        (status = 400, description = "Bad request (the message names the field)", body = ErrorBody),
        (status = 404, description = "No such repository", body = ErrorBody),
        (status = 409, description = "The repository is busy with another job", body = ErrorBody)))]
async fn start_prune(
    State(state): AppState,
    Path(name): Path<String>,
    JsonBody(r): JsonBody<PruneRequest>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    repository_name(&state, &name)?;
    let mut options = PruneOptions::default();
    if let Some(m) = &r.max_unused {
        options.max_unused_percent = crate::retention::prune::parse_max_unused(m)
            .map_err(|e| ApiError::bad_request(format!("max_unused {e}")))?;
    }
    let description = if r.dry_run {
        "prune (dry run)"
    } else {
        "prune"
    };
    let operation = Operation::Prune {
        options,
        dry_run: r.dry_run,
    };
    start(
        &state,
        specs::repository_job(&name, operation, description.to_string()),
    )
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Read and verify every blob.
    #[serde(default)]
    read_data: bool,
    /// Read part of the data: `N/M` or `P%`.
    read_data_subset: Option<String>,
}

/// Starts a check job.
#[utoipa::path(post, path = "/repositories/{name}/check", tag = "jobs",
    params(("name" = String, Path, description = "Repository name")),
    request_body = CheckRequest,
    responses(
        (status = 202, description = "Job started", body = Job),
        (status = 400, description = "Bad request (the message names the field)", body = ErrorBody),
        (status = 404, description = "No such repository", body = ErrorBody),
        (status = 409, description = "The repository is busy with another job", body = ErrorBody)))]
async fn start_check(
    State(state): AppState,
    Path(name): Path<String>,
    JsonBody(r): JsonBody<CheckRequest>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    repository_name(&state, &name)?;
    let read_data = match (r.read_data, &r.read_data_subset) {
        (true, Some(_)) => {
            return Err(ApiError::bad_request(
                "give read_data or read_data_subset, not both",
            ))
        }
        (true, None) => ReadData::All,
        (false, Some(s)) => ReadData::parse_subset(s)
            .map_err(|e| ApiError::bad_request(format!("read_data_subset {e}")))?,
        (false, None) => ReadData::None,
    };
    let description = match read_data {
        ReadData::None => "check".to_string(),
        _ => "check, reading data".to_string(),
    };
    start(
        &state,
        specs::repository_job(&name, Operation::Check { read_data }, description),
    )
}

// ---- sources -------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct SourceInfo {
    name: String,
    repository: String,
    paths: Vec<String>,
    /// Names of the command streams (files at the snapshot root).
    streams: Vec<String>,
    schedule: Option<String>,
    /// RFC 3339.
    next_run: Option<String>,
    last_job_id: Option<String>,
    last_job_state: Option<JobState>,
}

/// The sources of the settings file, with their schedules and last jobs.
#[utoipa::path(get, path = "/sources", tag = "sources",
    responses(
        (status = 200, description = "Configured sources", body = Vec<SourceInfo>)))]
async fn list_sources(State(state): AppState) -> Json<Vec<SourceInfo>> {
    let jobs = state.jobs.list();
    Json(
        state
            .settings
            .sources
            .iter()
            .map(|(name, s)| {
                let last = jobs.iter().find(|j| j.source.as_deref() == Some(name));
                SourceInfo {
                    name: name.clone(),
                    repository: s.repository.clone(),
                    paths: s.paths.iter().map(|p| p.display().to_string()).collect(),
                    streams: s.commands.iter().map(|c| c.name.clone()).collect(),
                    schedule: s.schedule.clone(),
                    next_run: s.schedule.as_deref().and_then(super::schedule::next_run),
                    last_job_id: last.map(|j| j.id.clone()),
                    last_job_state: last.map(|j| j.state),
                }
            })
            .collect(),
    )
}

/// Starts a backup of a source (then its retention, if it has one).
#[utoipa::path(post, path = "/sources/{name}/backup", tag = "jobs",
    params(("name" = String, Path, description = "Source name")),
    responses(
        (status = 202, description = "Job started", body = Job),
        (status = 404, description = "No such source", body = ErrorBody),
        (status = 409, description = "A backup of this source is running, or the repository is busy", body = ErrorBody)))]
async fn start_backup(
    State(state): AppState,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let source =
        state.settings.sources.get(&name).ok_or_else(|| {
            ApiError::not_found(format!("no source {name:?} in the settings file"))
        })?;
    start(&state, specs::backup(&name, source, Trigger::Api))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceRestoreRequest {
    /// `latest` (of this source) or an id prefix.
    snapshot: String,
    /// Which database of the snapshot (needed when it holds several).
    database: Option<String>,
    /// The database to create (postgres, mysql); default: `database`.
    target_database: Option<String>,
    /// The file to write (sqlite, redis): absolute, below one of
    /// `server.restore_roots`.
    target: Option<String>,
    /// Only these tables, `SCHEMA.TABLE` or `TABLE` (postgres).
    #[serde(default)]
    tables: Vec<String>,
    /// Another server than the source's, in the service's syntax.
    connection: Option<String>,
    /// `always` replaces an existing database or file; anything else refuses it.
    overwrite: Option<String>,
    /// Restore the roles (postgres) or users and grants (mariadb) first.
    #[serde(default)]
    globals: bool,
    /// Leave ownership and privileges out (postgres).
    #[serde(default)]
    no_owner: bool,
}

/// Recovers a data-service source into a new database (or file), as a job.
#[utoipa::path(post, path = "/sources/{name}/restore", tag = "jobs",
    params(("name" = String, Path, description = "Source name (a data service)")),
    request_body = ServiceRestoreRequest,
    responses(
        (status = 202, description = "Job started", body = Job),
        (status = 400, description = "Bad request (the message names the field)", body = ErrorBody),
        (status = 404, description = "No such source or snapshot", body = ErrorBody),
        (status = 500, description = "The repository could not be read", body = ErrorBody)))]
async fn start_service_restore(
    State(state): AppState,
    Path(name): Path<String>,
    JsonBody(r): JsonBody<ServiceRestoreRequest>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let source =
        state.settings.sources.get(&name).ok_or_else(|| {
            ApiError::not_found(format!("no source {name:?} in the settings file"))
        })?;
    if source.service().is_none() {
        return Err(ApiError::bad_request(format!(
            "source {name:?} is not a data service: restore it with POST /repositories/{}/restore",
            source.repository
        )));
    }
    let target = r
        .target
        .as_deref()
        .map(|t| restore_file_target(&state, t))
        .transpose()?;
    let replace = match r.overwrite.as_deref() {
        None => false,
        Some(o) => {
            o.parse::<Overwrite>()
                .map_err(|e| ApiError::bad_request(format!("overwrite: {e}")))?
                == Overwrite::Always
        }
    };
    let filter = crate::ops::source_filter(source);
    let snapshot = resolve_snapshot(&state, &source.repository, &r.snapshot, filter).await?;
    let into = r
        .target_database
        .clone()
        .or(r.database.clone())
        .or(r.target.clone())
        .unwrap_or_else(|| "its database".into());
    let description = format!(
        "restore of source {name:?} from snapshot {} into {into}",
        snapshot.short_id
    );
    let operation = Operation::ServiceRestore {
        source: name.clone(),
        tree: parse_id(&snapshot.tree)?,
        options: ServiceRestoreOptions {
            database: r.database,
            target_database: r.target_database,
            target,
            tables: r.tables,
            connection: r.connection,
            replace,
            globals: r.globals,
            no_owner: r.no_owner,
        },
    };
    let mut spec = specs::repository_job(&source.repository, operation, description);
    spec.source = Some(name);
    start(&state, spec)
}

/// Runs a restore drill now.
#[utoipa::path(post, path = "/drills/{name}/run", tag = "jobs",
    params(("name" = String, Path, description = "Drill name")),
    responses(
        (status = 202, description = "Job started", body = Job),
        (status = 404, description = "No such drill", body = ErrorBody)))]
async fn start_drill(
    State(state): AppState,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let drill =
        state.settings.drills.get(&name).ok_or_else(|| {
            ApiError::not_found(format!("no drill {name:?} in the settings file"))
        })?;
    let repository = state
        .settings
        .sources
        .get(&drill.source)
        .map(|s| s.repository.clone())
        .ok_or_else(|| ApiError::internal(format!("no source {:?}", drill.source)))?;
    start(
        &state,
        specs::drill(&name, drill, &repository, Trigger::Api),
    )
}

/// Runs a copy of the settings file (`[copies.NAME]`) now.
#[utoipa::path(post, path = "/copies/{name}/run", tag = "jobs",
    params(("name" = String, Path, description = "Copy name")),
    responses(
        (status = 202, description = "Job started", body = Job),
        (status = 404, description = "No such copy", body = ErrorBody),
        (status = 409, description = "This copy is already running", body = ErrorBody)))]
async fn start_copy(
    State(state): AppState,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let copy = state
        .settings
        .copies
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("no copy {name:?} in the settings file")))?;
    start(&state, specs::copy(&name, copy, Trigger::Api))
}

fn start(
    state: &ServerState,
    spec: super::jobs::JobSpec,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let job = state.jobs.start(spec)?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

// ---- jobs ----------------------------------------------------------------------

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    state: Option<JobState>,
    kind: Option<JobKind>,
    source: Option<String>,
    /// At most this many, newest first (default 100).
    limit: Option<u32>,
}

/// Jobs, newest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    params(JobQuery),
    responses(
        (status = 200, description = "Jobs", body = Vec<Job>),
        (status = 400, description = "Bad query", body = ErrorBody)))]
async fn list_jobs(
    State(state): AppState,
    QueryParams(q): QueryParams<JobQuery>,
) -> Json<Vec<Job>> {
    let limit = q.limit.unwrap_or(100) as usize;
    Json(
        state
            .jobs
            .list()
            .into_iter()
            .filter(|j| q.state.is_none_or(|s| s == j.state))
            .filter(|j| q.kind.is_none_or(|k| k == j.kind))
            .filter(|j| q.source.is_none() || j.source == q.source)
            .take(limit)
            .collect(),
    )
}

/// One job: state, progress, result, log tail.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "No such job", body = ErrorBody)))]
async fn get_job(State(state): AppState, Path(id): Path<String>) -> Result<Json<Job>, ApiError> {
    state
        .jobs
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no job {id:?}")))
}

/// Cancels a running job (what it already stored stays usable).
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 202, description = "Cancelling", body = Job),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is not running", body = ErrorBody)))]
async fn cancel_job(
    State(state): AppState,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    match state.jobs.cancel(&id) {
        None => Err(ApiError::not_found(format!("no job {id:?}"))),
        Some(Err(why)) => Err(ApiError::new(StatusCode::CONFLICT, why)),
        Some(Ok(job)) => Ok((StatusCode::ACCEPTED, Json(job))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_route_and_where_a_token_is_needed() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        // each route's handler documents that very method and path
        for (method, path) in ROUTES {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} missing"
            );
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        assert_eq!(documented, ROUTES.len());
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert!(doc["paths"]["/jobs"]["get"]["responses"]["401"].is_object());
        assert!(doc["paths"]["/healthz"]["get"]["responses"]["401"].is_null());
    }
}
