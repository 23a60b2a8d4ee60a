#!/usr/bin/env bash
# Schemathesis (property-based testing of an OpenAPI document against the
# live server that serves it; from PyPI, pinned below) for cairn's HTTP API.
#
#   schemathesis.sh install                     venv with schemathesis (idempotent)
#   schemathesis.sh run URL TOKEN [ARGS...]     test URL/openapi.json against URL (installs
#                                               first if needed); exit 0 only if no check
#                                               failed and nothing errored
#   schemathesis.sh replay URL TOKEN [ARGS...]  send the failures of the last run again
#
# run sends `Authorization: Bearer TOKEN` with its requests (a few go without it
# on purpose: document 401 on every secured operation) and runs these checks
# ($CAIRN_SCHEMATHESIS_CHECKS replaces the list; `-c X` in ARGS only adds to it,
# `--exclude-checks X` removes):
#   not_a_server_error            no 5xx, for valid and invalid input and for
#                                 undeclared methods (TRACE, PATCH...) alike
#   status_code_conformance       every status the server answers is documented
#                                 (or covered by 4XX/5XX/default) for that operation
#   content_type_conformance      a documented Content-Type (so error bodies too)
#   response_schema_conformance   the body validates against the documented schema;
#                                 an empty body where `content` is documented fails
# on all four phases (examples, coverage, fuzzing, stateful), positive and
# negative inputs, at most $CAIRN_SCHEMATHESIS_MAX_EXAMPLES (default 25) test
# cases per operation and phase. ARGS go to `schemathesis run` after ours, and
# for single-valued options a later one wins: e.g. `--seed N` replays a run
# (the seed is printed), `--max-examples 5`, `--phases examples,coverage`,
# `--exclude-path-regex ^/x`, `--report junit --report-dir DIR`. The requests go
# to URL + the document's paths (its `servers` are ignored).
#
# Where it writes: nothing in the current directory (unless ARGS ask for a
# report). Schemathesis' state (probing results it reuses, and the crash files
# that replay sends again) goes to $CAIRN_SCHEMATHESIS_HOME/state and is emptied
# at the start of each run, so runs do not depend on each other; the config file
# that says so also keeps a stray schemathesis.toml in the work tree or above it
# from being read ($CAIRN_SCHEMATHESIS_CONFIG names your own instead). Hypothesis'
# cache goes to $CAIRN_SCHEMATHESIS_HOME/hypothesis. Schemathesis 4 has no
# telemetry and no upload service (3.x had both): it talks to URL only.
#
# Knobs: CAIRN_SCHEMATHESIS_HOME (default ${XDG_CACHE_HOME:-~/.cache}/cairn-schemathesis),
# CAIRN_SCHEMATHESIS_PYTHON (interpreter for the venv, default python3, >= 3.11),
# CAIRN_SCHEMATHESIS_MAX_EXAMPLES, CAIRN_SCHEMATHESIS_CHECKS, CAIRN_SCHEMATHESIS_CONFIG,
# CAIRN_SCHEMATHESIS_TIMEOUT (seconds before a run is killed and fails, default 600).
#
# Requirements: python3 >= 3.11 with venv (falls back to Debian's python3-venv
# through apt-get), PyPI access for the first install; none after it. Output:
# schemathesis' report on stdout, without colours when CI is set or stdout is
# no terminal; this script's own lines on stderr.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
# The complete dependency closure, as resolved on CPython 3.11 (Debian 12), 2026-11.
PINS="schemathesis==$SCHEMATHESIS_VERSION
anyio==4.16.0
certifi==2026.10.18
charset-normalizer==3.5.2
click==8.5.1
graphql-core==3.3.2
harfile==0.6.0
hypothesis==6.170.15
hypothesis-graphql==0.13.5
idna==3.20
iniconfig==2.3.1
jsonschema-rs==0.60.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
packaging==26.3
pluggy==1.7.0
Pygments==2.21.0
pyrate-limiter==4.5.1
pytest==9.2.0
PyYAML==6.0.3
requests==2.34.2
rich==15.0.0
sortedcontainers==2.4.0
typing-extensions==4.16.0
urllib3==2.8.0
Werkzeug==3.1.9"

DEFAULT_CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance

ME="schemathesis.sh"
ST_HOME="${CAIRN_SCHEMATHESIS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn-schemathesis}"
VENV="$ST_HOME/venv"
PY="$VENV/bin/python"
ST="$VENV/bin/schemathesis"

say() { echo "$ME: $*" >&2; }
die() { say "error: $*"; exit 1; }

# ------------------------------------------------------------------ install
installed() { [[ -x "$ST" && -f "$VENV/.pins" ]] && [[ "$(cat "$VENV/.pins")" == "$PINS" ]]; }

cmd_install() {
  mkdir -p "$ST_HOME"
  ( flock 9; if ! installed; then install_now; fi ) 9>"$ST_HOME/install.lock"
  say "schemathesis $SCHEMATHESIS_VERSION ready in $VENV"
}

apt_python() {
  command -v apt-get >/dev/null || die "no usable python3 with venv, and no apt-get"
  say "installing Debian's python3 + python3-venv"
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "python3-venv is missing and I am not root (no sudo either)"
    sudo=(sudo -n)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get install -y -q python3 python3-venv >&2 ||
    { "${sudo[@]}" apt-get update -q >&2 && "${sudo[@]}" apt-get install -y -q python3 python3-venv >&2; }
}

install_now() {
  local t0=$SECONDS py="${CAIRN_SCHEMATHESIS_PYTHON:-python3}"
  say "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  rm -rf "$VENV"
  # a venv without pip (Debian's python3 lacking python3-venv) counts as a failure too
  if ! command -v "$py" >/dev/null || ! "$py" -m venv "$VENV" >&2 || [[ ! -x "$PY" ]]; then
    rm -rf "$VENV"; apt_python; py=/usr/bin/python3
    "$py" -m venv "$VENV" >&2
  fi
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "schemathesis 4 needs Python >= 3.11, $("$PY" -V 2>&1) is older: set CAIRN_SCHEMATHESIS_PYTHON"
  printf '%s\n' "$PINS" >"$VENV/requirements.txt"
  local pip=("$PY" -m pip install -q --disable-pip-version-check --no-input)
  "${pip[@]}" -r "$VENV/requirements.txt" >&2 || {
    say "the pinned set did not install; trying schemathesis==$SCHEMATHESIS_VERSION with current dependencies"
    "${pip[@]}" "schemathesis==$SCHEMATHESIS_VERSION" >&2
  }
  [[ "$("$ST" --version 2>/dev/null)" == *" $SCHEMATHESIS_VERSION" ]] ||
    die "schemathesis was installed but does not run"
  printf '%s' "$PINS" >"$VENV/.pins"   # written last: marks a complete install
  say "installed in $((SECONDS - t0))s ($(du -sh "$VENV" | cut -f1))"
}

# ------------------------------------------------------------------ run
write_config() {
  local state="$ST_HOME/state" f="$ST_HOME/schemathesis.toml"
  mkdir -p "$state"
  # TOML basic string: escape backslashes and quotes of the path
  local dir=${state//\\/\\\\}; dir=${dir//\"/\\\"}
  printf '# written by scripts/%s (cairn) before every run\n[cache]\ndirectory = "%s"\n' "$ME" "$dir" >"$f.tmp"
  mv -f "$f.tmp" "$f"
  echo "$f"
}

config_file() {
  local config="${CAIRN_SCHEMATHESIS_CONFIG:-}"
  if [[ -z "$config" ]]; then config="$(write_config)"; fi
  [[ -f "$config" ]] || die "no such config file: $config"
  echo "$config"
}

local_env() {
  # Hypothesis' own cache (Unicode tables, constants) would land in ./.hypothesis
  export HYPOTHESIS_STORAGE_DIRECTORY="$ST_HOME/hypothesis"
  # a proxy set for the registries must not catch requests to this machine
  export NO_PROXY="${NO_PROXY:+$NO_PROXY,}127.0.0.1,localhost,::1" no_proxy="${no_proxy:+$no_proxy,}127.0.0.1,localhost,::1"
}

check_url_token() {
  [[ "$1" =~ ^https?://[^/]+ ]] || die "URL must be http(s)://HOST:PORT[/PREFIX], not '$1'"
  [[ -n "$2" && "$2" != *$'\n'* ]] || die "TOKEN must be one non-empty line"
}

cmd_run() {
  local url="${1%/}" token="$2"; shift 2
  check_url_token "$url" "$token"
  if ! installed; then cmd_install; fi
  # each run starts from nothing: no cache of a previous run's probing, no old crash files
  if [[ -z "${CAIRN_SCHEMATHESIS_CONFIG:-}" ]]; then rm -rf "$ST_HOME/state"; fi
  local config; config="$(config_file)"
  local args=(
    "$url/openapi.json"
    --url "$url"                  # base URL of the requests: the schema's servers are ignored
    --header "Authorization: Bearer $token"
    --checks "${CAIRN_SCHEMATHESIS_CHECKS:-$DEFAULT_CHECKS}"
    --max-examples "${CAIRN_SCHEMATHESIS_MAX_EXAMPLES:-25}"
    --wait-for-schema 30          # the server may still be starting
    --request-timeout 10
    --generation-database none    # every run starts fresh: no example database on disk
  )
  # no colours or progress animation when nobody watches (CI: no terminal)
  if [[ ! -t 1 || -n "${CI:-}" ]]; then args+=(--no-color); fi
  say "schemathesis $SCHEMATHESIS_VERSION against $url"
  local_env
  local rc=0
  timeout --kill-after=10 "${CAIRN_SCHEMATHESIS_TIMEOUT:-600}" \
    "$ST" --config-file "$config" run "${args[@]}" "$@" </dev/null || rc=$?
  case $rc in
    0) say "passed" ;;
    124 | 137) say "killed after ${CAIRN_SCHEMATHESIS_TIMEOUT:-600}s (CAIRN_SCHEMATHESIS_TIMEOUT)" ;;
    *) say "failed (exit $rc)" ;;
  esac
  return "$rc"
}

# The failures the last run stored (the crash files), sent again to URL, which may be
# another instance of the server (another port, another token).
cmd_replay() {
  local url="${1%/}" token="$2"; shift 2
  check_url_token "$url" "$token"
  installed || die "not installed; run: $ME install"
  local config; config="$(config_file)"
  local_env
  "$ST" --config-file "$config" replay --url "$url" --schema-location "$url/openapi.json" \
    --header "Authorization: Bearer $token" "$@" </dev/null
}

usage() {
  sed -n '5,9s/^#   //p' "$0" >&2
  exit 2
}

case "${1:-}" in
  install) [[ $# -eq 1 ]] || usage; cmd_install ;;
  run | replay) [[ $# -ge 3 ]] || usage; c=$1; shift; "cmd_$c" "$@" ;;
  *) usage ;;
esac
