#!/usr/bin/env bash
# A real S3 + Swift object store on 127.0.0.1 for cairn's tests.
#
# It is OpenStack Swift from PyPI (pinned below), run as ONE Python process
# that hosts the proxy (with the s3api and tempauth middlewares) and the
# account, container and object servers on eventlet. One port answers both
#   S3:    SigV4, path-style, region us-east-1 (http://127.0.0.1:PORT/BUCKET/KEY)
#   Swift: native v1 API, tempauth (http://127.0.0.1:PORT/auth/v1.0 and /v1/AUTH_cairn)
#
#   object-store.sh install                 venv with Swift (idempotent)
#   eval "$(object-store.sh start DIR)"     start (installs first if needed), wait until
#                                           healthy, create bucket/container cairn-test,
#                                           print `export` lines (see below)
#   object-store.sh stop DIR                stop that instance and wait until it is gone
#   object-store.sh status DIR              exit 0 if it runs and answers S3 and Swift
#   eval "$(object-store.sh env DIR)"       the export lines again (with a fresh token)
#   object-store.sh mkbucket DIR NAME       one more bucket (= Swift container)
#
# Exports printed by start/env:
#   AWS_ACCESS_KEY_ID (cairn:tester)  AWS_SECRET_ACCESS_KEY  AWS_REGION  AWS_DEFAULT_REGION
#   AWS_ENDPOINT_URL  AWS_EC2_METADATA_DISABLED=true  CAIRN_TEST_S3_BUCKET=cairn-test
#   SWIFT_ENDPOINT (storage URL .../v1/AUTH_cairn)  SWIFT_TOKEN  CAIRN_TEST_SWIFT_CONTAINER
#   SWIFT_AUTH_URL SWIFT_USER SWIFT_KEY, the same v1 credentials as restic and
#   python-swiftclient read them (ST_AUTH ST_USER ST_KEY), and as OS_AUTH_URL
#   OS_USERNAME OS_PASSWORD (the URL ends in /auth/v1.0, so clients that pick the
#   auth version from the URL, restic among them, do v1 auth).
#   CAIRN_TEST_APPENDONLY_AWS_ACCESS_KEY_ID, …_AWS_SECRET_ACCESS_KEY and
#   …_SWIFT_TOKEN: a second user (cairn:appendonly) of the same account whose
#   DELETE requests are refused, as a backup host's credentials without
#   s3:DeleteObject would be.
#
# Restarts: DIR keeps its identity. The first start picks a free port (or
# $CAIRN_OBJECT_STORE_PORT) and records it with the credentials in
# DIR/identity.json; every later `start DIR` binds that same port again and
# serves the same data with the same access key, secret and token key, so
# credentials and SWIFT_TOKEN from before a stop keep working (tokens live 7
# days). If the port is busy, start waits up to 15 s for it, then fails.
# `stop` is abrupt (SIGTERM, the process dies at once, like a crash seen from
# the client): a request in flight fails, anything answered with success stays.
#
# DIR layout: server.pid, server.log, identity.json (port + secrets: keep),
# env.sh (last exports), node/ (the data), conf/ (configs, rings and the Python
# helper, rewritten on every start).
#
# Knobs: CAIRN_OBJECT_STORE_HOME (venv parent, default ~/.cache/cairn-object-store),
# CAIRN_OBJECT_STORE_PYTHON (interpreter for the venv, default python3),
# CAIRN_OBJECT_STORE_PORT (port of a DIR's first start), CAIRN_OBJECT_STORE_TIMEOUT
# (seconds start waits for health, default 60), CAIRN_OBJECT_STORE_FSYNC=1 (really
# fsync; by default fsync is skipped, which loses nothing unless the machine crashes).
#
# Requirements: python3 with venv (falls back to Debian's python3-venv through
# apt-get), PyPI access for the first install, and a filesystem under DIR with
# user xattrs (ext4, xfs, btrfs; tmpfs only on Linux >= 6.6). Only stdout of
# start/env carries exports; everything else goes to stderr.
set -euo pipefail

SWIFT_VERSION=2.38.3
# The complete dependency closure, as resolved on CPython 3.11 (Debian 12), 2026-11.
PINS="swift==$SWIFT_VERSION
certifi==2026.10.18
cffi==2.1.1
charset-normalizer==3.5.2
cryptography==50.0.2
dnspython==2.9.2
eventlet==0.41.3
greenlet==3.5.6
idna==3.20
lxml==6.1.3
PasteDeploy==3.1.0
pycparser==3.12
pyeclib==1.8.0
requests==2.34.2
urllib3==2.8.0
xattr==1.3.0"

ME="object-store.sh"
STORE_HOME="${CAIRN_OBJECT_STORE_HOME:-$HOME/.cache/cairn-object-store}"
VENV="$STORE_HOME/venv"
PY="$VENV/bin/python"
HELPER=conf/cairn_object_store.py

say() { echo "$ME: $*" >&2; }
die() { say "error: $*"; exit 1; }

# ------------------------------------------------------------------ install
installed() { [[ -x "$PY" && -f "$VENV/.pins" ]] && [[ "$(cat "$VENV/.pins")" == "$PINS" ]]; }

cmd_install() {
  mkdir -p "$STORE_HOME"
  # lock in a subshell: the descriptor must not leak into a server started later
  ( flock 9; if ! installed; then install_now; fi ) 9>"$STORE_HOME/install.lock"
  say "swift $SWIFT_VERSION ready in $VENV"
}

apt_python() {
  command -v apt-get >/dev/null || die "no usable python3 with venv, and no apt-get"
  say "installing Debian's python3 + python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q python3 python3-venv >&2 ||
    { apt-get update -q >&2 && apt-get install -y -q python3 python3-venv >&2; }
}

install_now() {
  local t0=$SECONDS py="${CAIRN_OBJECT_STORE_PYTHON:-python3}"
  say "installing swift $SWIFT_VERSION into $VENV"
  rm -rf "$VENV"
  if ! command -v "$py" >/dev/null || ! "$py" -m venv "$VENV" >&2; then
    rm -rf "$VENV"; apt_python; py=/usr/bin/python3
    "$py" -m venv "$VENV" >&2
  fi
  printf '%s\n' "$PINS" >"$VENV/requirements.txt"
  local pip=("$PY" -m pip install -q --disable-pip-version-check)
  "${pip[@]}" -r "$VENV/requirements.txt" >&2 || {
    say "the pinned set did not install; trying swift==$SWIFT_VERSION with current dependencies"
    "${pip[@]}" "swift==$SWIFT_VERSION" >&2
  }
  "$PY" -c 'import swift.proxy.server, swift.obj.server, eventlet, xattr, pyeclib' ||
    die "swift was installed but does not import"
  printf '%s' "$PINS" >"$VENV/.pins"   # written last: marks a complete install
  say "installed in $((SECONDS - t0))s ($(du -sh "$VENV" | cut -f1))"
}

# ------------------------------------------------------------------ helpers
existing_dir() { [[ -d "$1" ]] || die "no such data dir: $1"; (cd "$1" && pwd -P); }

server_pid() { if [[ -f "$1/server.pid" ]]; then tr -dc 0-9 <"$1/server.pid"; fi; }

# Alive and not a zombie (PID 1 may be slow to reap, or never reap).
alive() {
  local state
  state="$(sed -E 's/^.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null)" && [[ -n "$state" && "$state" != Z ]]
}

# Is PID the live server of data dir DIR?
is_server() {
  [[ -n "$1" ]] && alive "$1" &&
    [[ "$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)" == *"cairn_object_store.py serve $2 "* ]]
}

running() { is_server "$(server_pid "$1")" "$1"; }

helper() { "$PY" "$1/$HELPER" "${@:2}"; }

# ------------------------------------------------------------------ commands
cmd_start() {
  local dir; dir="$(mkdir -p "$1" && cd "$1" && pwd -P)"
  if ! installed; then cmd_install; fi
  write_helper "$dir"
  if running "$dir"; then
    helper "$dir" probe "$dir" check 10 || die "pid $(server_pid "$dir") runs for $dir but is unhealthy; stop it first"
    say "already running (pid $(server_pid "$dir"))"
    cat "$dir/env.sh"; return 0
  fi
  rm -f "$dir/server.pid" "$dir/conf/listening"
  local t0; t0=$(date +%s.%N)
  echo "=== $(date -u +%FT%TZ) start" >>"$dir/server.log"
  "$PY" "$dir/$HELPER" serve "$dir" </dev/null >>"$dir/server.log" 2>&1 &
  echo $! >"$dir/server.pid"
  if ! helper "$dir" probe "$dir" start "${CAIRN_OBJECT_STORE_TIMEOUT:-60}"; then
    say "not healthy; last lines of $dir/server.log:"
    awk '/^=== .* start$/ { n = 0 } { line[n++] = $0 } END { for (i = (n > 30 ? n - 30 : 0); i < n; i++) print line[i] }' \
      "$dir/server.log" >&2
    cmd_stop "$dir" || true
    exit 1
  fi
  say "running (pid $(server_pid "$dir")) on $(grep -o 'http://[^ ]*' "$dir/env.sh" | head -1)," \
    "healthy after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s"
  cat "$dir/env.sh"
}

cmd_stop() {
  [[ -d "$1" ]] || { say "no data dir $1: nothing to stop"; return 0; }
  local dir pid _; dir="$(cd "$1" && pwd -P)"; pid="$(server_pid "$dir")"
  if ! is_server "$pid" "$dir"; then
    say "not running${pid:+ (stale pid $pid)}"; rm -f "$dir/server.pid"; return 0
  fi
  # the pid is checked once above; below, wait for the process itself to be
  # gone (its cmdline empties early in exit, before its sockets are closed)
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    say "pid $pid still there after 10s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
  fi
  alive "$pid" && die "pid $pid did not exit"
  rm -f "$dir/server.pid"
  echo "=== $(date -u +%FT%TZ) stopped" >>"$dir/server.log"
  say "stopped (pid $pid)"
}

cmd_status() {
  local dir; dir="$(existing_dir "$1")"
  running "$dir" || { say "not running"; return 1; }
  if ! { installed && write_helper "$dir" && helper "$dir" probe "$dir" check 5; }; then
    say "running but unhealthy"; return 1
  fi
  say "healthy (pid $(server_pid "$dir"))"
}

cmd_env() {
  local dir; dir="$(existing_dir "$1")"
  running "$dir" || die "not running for $dir"
  write_helper "$dir"; helper "$dir" probe "$dir" check 10
  cat "$dir/env.sh"
}

cmd_mkbucket() {
  local dir; dir="$(existing_dir "$1")"
  running "$dir" || die "not running for $dir"
  write_helper "$dir"; helper "$dir" mkbucket "$dir" "$2"
}

# ------------------------------------------------------------------ the Python side
# serve: configs, rings and all four Swift servers in this one process.
# probe: wait for health, create the default bucket, write env.sh.
write_helper() {
  mkdir -p "$1/conf"
  cat >"$1/$HELPER.tmp" <<'PY'
"""Written by scripts/object-store.sh (cairn); rewritten on every start."""
import base64, datetime, hashlib, hmac, http.client, json, os, re, secrets, shlex, sys, time

HOST, REGION, ACCOUNT, USER, BUCKET = "127.0.0.1", "us-east-1", "cairn", "tester", "cairn-test"
APPEND_USER = "appendonly"  # a second user of the same account that cannot delete
PART_POWER = 6  # fixed: object placement on disk depends on it


def put_file(path, text, mode=0o644):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.chmod(path + ".tmp", mode)
    os.replace(path + ".tmp", path)


def identity(d, create=False):
    path = os.path.join(d, "identity.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    if not create:
        sys.exit(f"{d} was never started")
    ident = {"port": None, "secret": secrets.token_hex(20), "hash_suffix": secrets.token_hex(16),
             "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
             "appendonly_secret": secrets.token_hex(20)}
    put_file(path, json.dumps(ident, indent=1), 0o600)
    return ident


def appendonly_filter(global_conf, **local_conf):
    """Paste filter after tempauth: the user APPEND_USER may read and write
    but never delete (DELETE is all a delete is, in S3 and Swift alike; an S3
    multi-object delete reaches here as one DELETE per key). It models a
    backup host's credentials without s3:DeleteObject."""
    def wrap(app):
        def refuse_deletes(env, start_response):
            groups = env.get("REMOTE_USER", "").split(",")
            if f"{ACCOUNT}:{APPEND_USER}" in groups and env["REQUEST_METHOD"] == "DELETE":
                start_response("403 Forbidden", [("Content-Type", "text/plain")])
                return [b"this user may not delete\n"]
            return app(env, start_response)
        return refuse_deletes
    return wrap


# ---------------------------------------------------------------- serve
COMMON = """[DEFAULT]
swift_dir = {conf}
devices = {node}
mount_check = false
disable_fallocate = true
recon_cache_path = {node}
log_level = INFO
"""

BACKEND = COMMON + """
[app:main]
use = egg:swift#{kind}
log_requests = false
conn_timeout = 5
node_timeout = 30
# wait for the listing update before answering a PUT/DELETE (default 1 s), so
# that a LIST right after a successful write sees it: there is no updater daemon
container_update_timeout = 30
"""

PROXY = COMMON + """
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging listing_formats bulk s3api tempauth appendonly copy slo dlo versioned_writes proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
conn_timeout = 5
node_timeout = 60
# one node only: never take it out of service after errors
error_suppression_limit = 1000000

[filter:s3api]
use = egg:swift#s3api
location = {region}
max_upload_part_num = 10000

[filter:tempauth]
use = egg:swift#tempauth
user_{account}_{user} = {secret} .admin
user_{account}_{append_user} = {appendonly_secret} .admin
token_life = 604800
# stateless tokens (no memcached), valid across restarts
fernet_key_1 = {fernet_key}
active_fernet_key_id = 1

[filter:appendonly]
paste.filter_factory = cairn_object_store:appendonly_filter

[filter:slo]
use = egg:swift#slo
max_manifest_segments = 10000
rate_limit_after_segment = 1000000

[filter:dlo]
use = egg:swift#dlo
rate_limit_after_segment = 1000000

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:copy]
use = egg:swift#copy
[filter:versioned_writes]
use = egg:swift#versioned_writes
"""


class LocalCache:
    """In-process stand-in for memcached (swift.cache): the proxy caches account
    and container info in it, saving two backend requests per object request."""

    def __init__(self):
        self.items = {}

    def set(self, key, value, serialize=True, time=0, **_):
        expires = None if not time else (time if time > 2592000 else _now() + time)
        self.items[key] = (json.dumps(value) if serialize else value, serialize, expires)

    def get(self, key, **_):
        value, serialized, expires = self.items.get(key, (None, False, None))
        if expires is not None and expires < _now():
            self.items.pop(key, None)
            return None
        return json.loads(value) if serialized and value is not None else value

    def delete(self, key, **_):
        self.items.pop(key, None)

    def incr(self, key, delta=1, time=0, **_):
        value = max(0, int(self.get(key) or 0) + int(delta))
        self.set(key, str(value), serialize=False, time=time)
        return value

    def decr(self, key, delta=1, time=0, **_):
        return self.incr(key, -int(delta), time)

    def get_multi(self, keys, server_key=None, **_):
        return [self.get(k) for k in keys]

    def set_multi(self, mapping, server_key=None, serialize=True, time=0, **_):
        for k, v in mapping.items():
            self.set(k, v, serialize, time)


def _now():
    return time.time()


def serve(d):
    import logging
    if os.environ.get("CAIRN_OBJECT_STORE_FSYNC") != "1":
        os.fsync = os.fdatasync = lambda fd: None
    try:
        os.setsid()  # own session: a Ctrl-C or hangup of the caller does not reach the server
    except OSError:
        pass
    ident = identity(d, create=True)
    if "appendonly_secret" not in ident:  # DIRs started before the append-only user existed
        ident["appendonly_secret"] = secrets.token_hex(20)
    conf, node = os.path.join(d, "conf"), os.path.join(d, "node")
    os.makedirs(os.path.join(node, "d1"), exist_ok=True)
    probe_file = os.path.join(node, "d1", ".xattr-probe")
    open(probe_file, "w").close()
    try:
        os.setxattr(probe_file, "user.cairn", b"1")
    except OSError as e:
        sys.exit(f"{node} does not support user xattrs, which Swift's object server needs: {e}")
    finally:
        os.unlink(probe_file)

    import warnings
    warnings.filterwarnings("ignore", message=r"(?s).*(Eventlet is deprecated|capitalize_response_headers)")
    import eventlet, eventlet.wsgi
    import swift
    from swift.common import utils, constraints, storage_policy
    from swift.common.utils import logs
    utils.monkey_patch()
    eventlet.hubs.use_hub(utils.get_hub())

    class ToStderr(logging.StreamHandler):  # replaces Swift's syslog handler
        def __init__(self, *args, **kwargs):
            super().__init__(sys.stderr)

        def format(self, record):
            return time.strftime("%H:%M:%S ") + super().format(record)
    logs.ThreadSafeSysLogHandler = ToStderr

    # sockets first, so the rings can name the backends' real ports
    want = ident["port"] or int(os.environ.get("CAIRN_OBJECT_STORE_PORT") or 0)
    deadline = time.time() + 15
    while True:
        try:
            # reuse_port=False: eventlet would otherwise let two servers share the port
            front = eventlet.listen((HOST, want), backlog=1024, reuse_port=False)
            break
        except OSError as e:
            if time.time() > deadline:
                sys.exit(f"cannot bind {HOST}:{want}: {e}")
            time.sleep(0.25)
    backs = {kind: eventlet.listen((HOST, 0), backlog=1024, reuse_port=False)
             for kind in ("account", "container", "object")}

    fill = dict(conf=conf, node=node, region=REGION, account=ACCOUNT, user=USER,
                append_user=APPEND_USER, **ident)
    put_file(os.path.join(conf, "swift.conf"),
             f"[swift-hash]\nswift_hash_path_suffix = {ident['hash_suffix']}\n\n"
             "[storage-policy:0]\nname = gold\ndefault = yes\n")
    put_file(os.path.join(conf, "proxy-server.conf"), PROXY.format(**fill), 0o600)
    from swift.common.ring import RingBuilder
    for kind, sock in backs.items():
        put_file(os.path.join(conf, f"{kind}-server.conf"), BACKEND.format(kind=kind, **fill))
        builder = RingBuilder(PART_POWER, 1, 1)
        builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": HOST, "port": sock.getsockname()[1],
                         "device": "d1", "weight": 1, "meta": ""})
        builder.rebalance()
        builder.get_ring().save(os.path.join(conf, f"{kind}.ring.gz"))

    utils.set_swift_dir(conf)
    storage_policy.reload_storage_policies()
    constraints.reload_constraints()
    utils.disable_fallocate()
    from swift.common.wsgi import loadapp
    from swift.common.http_protocol import SwiftHttpProtocol
    apps = {kind: loadapp(os.path.join(conf, f"{kind}-server.conf"), global_conf={"log_name": kind})
            for kind in ("account", "container", "object", "proxy")}
    cache, proxy = LocalCache(), apps["proxy"]

    def proxy_with_cache(env, start_response):
        env["swift.cache"] = cache
        return proxy(env, start_response)
    apps["proxy"] = proxy_with_cache

    socks = dict(backs, proxy=front)
    threads = [eventlet.spawn(eventlet.wsgi.server, socks[kind], app, log=utils.NullLogger(),
                              custom_pool=eventlet.GreenPool(1024), protocol=SwiftHttpProtocol,
                              socket_timeout=60, capitalize_response_headers=False,  # AWS SDKs want "ETag"
                              url_length_limit=constraints.MAX_REQUEST_LINE, debug=False)
               for kind, app in apps.items()]
    ident["port"] = front.getsockname()[1]
    put_file(os.path.join(d, "identity.json"), json.dumps(ident, indent=1), 0o600)
    put_file(os.path.join(conf, "listening"), str(ident["port"]))  # the probe waits for this
    print(f"serving on {HOST}:{ident['port']} (backends {[s.getsockname()[1] for s in backs.values()]}),"
          f" pid {os.getpid()}, swift {swift.__version__}", file=sys.stderr, flush=True)
    for t in threads:
        t.wait()
    sys.exit("a listener stopped")


# ---------------------------------------------------------------- clients
def request(port, method, path, headers=None, body=b""):
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def s3_headers(method, path, port, secret):
    """SigV4 headers for a bodiless request."""
    t = datetime.datetime.now(datetime.timezone.utc)
    stamp, day = t.strftime("%Y%m%dT%H%M%SZ"), t.strftime("%Y%m%d")
    empty = hashlib.sha256(b"").hexdigest()
    h = {"host": f"{HOST}:{port}", "x-amz-content-sha256": empty, "x-amz-date": stamp}
    names = sorted(h)
    canonical = "\n".join([method, path, "", *(f"{n}:{h[n]}" for n in names), "", ";".join(names), empty])
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n" + hashlib.sha256(canonical.encode()).hexdigest()
    key = ("AWS4" + secret).encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    h["authorization"] = (f"AWS4-HMAC-SHA256 Credential={ACCOUNT}:{USER}/{scope}, "
                          f"SignedHeaders={';'.join(names)}, Signature={sig}")
    return h


def login(port, secret, user=USER):
    st, h, _ = request(port, "GET", "/auth/v1.0", {"X-Auth-User": f"{ACCOUNT}:{user}", "X-Auth-Key": secret})
    if st != 200:
        raise RuntimeError(f"v1 auth answered {st}")
    return h["x-auth-token"], h["x-storage-url"]


def put_container(port, token, url, name):
    path = url.split(f"{HOST}:{port}", 1)[1] + "/" + name
    st, _, body = request(port, "PUT", path, {"X-Auth-Token": token})
    if st not in (201, 202):
        raise RuntimeError(f"PUT container {name} answered {st} {body[:200]!r}")
    return path


def check_once(d, port, secret, create):
    st = request(port, "GET", "/healthcheck")[0]
    if st != 200:
        raise RuntimeError(f"/healthcheck answered {st}")
    token, url = login(port, secret)
    account = url.split(f"{HOST}:{port}", 1)[1]
    if create:  # exercises the container server, then the object server
        path = put_container(port, token, url, BUCKET)
        st = request(port, "HEAD", path + "/.no-such-object", {"X-Auth-Token": token})[0]
        if st != 404:
            raise RuntimeError(f"HEAD of a missing object answered {st}")
    else:
        st = request(port, "HEAD", account, {"X-Auth-Token": token})[0]
        if st not in (200, 204):
            raise RuntimeError(f"HEAD account answered {st}")
    st, _, body = request(port, "GET", "/", s3_headers("GET", "/", port, secret))
    if st != 200:
        raise RuntimeError(f"S3 ListBuckets answered {st} {body[:200]!r}")
    return token, url


def probe(d, mode, timeout):
    deadline, last = time.time() + float(timeout), "nothing tried"
    pid_file = os.path.join(d, "server.pid")
    while True:
        try:
            with open(pid_file) as f:
                pid = int(f.read())
            if not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                sys.exit(f"the server (pid {pid}) exited; last check: {last}")
            if not os.path.exists(os.path.join(d, "conf", "listening")):
                raise RuntimeError("not listening yet")
            ident = identity(d)
            token, url = check_once(d, ident["port"], ident["secret"], mode == "start")
            break
        except (OSError, ValueError, RuntimeError, http.client.HTTPException) as e:
            last = f"{type(e).__name__}: {e}"
            if time.time() > deadline:
                sys.exit(f"not healthy after {timeout}s; last check: {last}")
            time.sleep(0.2)
    base = f"http://{HOST}:{ident['port']}"
    user, key, auth = f"{ACCOUNT}:{USER}", ident["secret"], base + "/auth/v1.0"
    env = {
        "AWS_ACCESS_KEY_ID": user, "AWS_SECRET_ACCESS_KEY": key,
        "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": base,
        "AWS_EC2_METADATA_DISABLED": "true", "CAIRN_TEST_S3_BUCKET": BUCKET,
        "SWIFT_ENDPOINT": url, "SWIFT_TOKEN": token, "CAIRN_TEST_SWIFT_CONTAINER": BUCKET,
        "SWIFT_AUTH_URL": auth, "SWIFT_USER": user, "SWIFT_KEY": key,
        "ST_AUTH": auth, "ST_USER": user, "ST_KEY": key,
        "OS_AUTH_URL": auth, "OS_USERNAME": user, "OS_PASSWORD": key,
    }
    # the append-only user (see appendonly_filter), for tests of backup hosts
    env["CAIRN_TEST_APPENDONLY_AWS_ACCESS_KEY_ID"] = f"{ACCOUNT}:{APPEND_USER}"
    env["CAIRN_TEST_APPENDONLY_AWS_SECRET_ACCESS_KEY"] = ident["appendonly_secret"]
    env["CAIRN_TEST_APPENDONLY_SWIFT_TOKEN"] = login(ident["port"], ident["appendonly_secret"], APPEND_USER)[0]
    put_file(os.path.join(d, "env.sh"), "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()), 0o600)


def mkbucket(d, name):
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name):
        sys.exit(f"{name!r} is not a valid S3 bucket name")
    ident = identity(d)
    token, url = login(ident["port"], ident["secret"])
    put_container(ident["port"], token, url, name)
    print(f"bucket {name} ready", file=sys.stderr)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"serve": lambda: serve(args[0]), "probe": lambda: probe(*args),
     "mkbucket": lambda: mkbucket(*args)}[cmd]()
PY
  mv -f "$1/$HELPER.tmp" "$1/$HELPER"
}

usage() {
  sed -n '10,18s/^#   //p' "$0" >&2
  exit 2
}

case "${1:-}" in
  install) cmd_install ;;
  start | stop | status | env) [[ $# -eq 2 ]] || usage; "cmd_$1" "$2" ;;
  mkbucket) [[ $# -eq 3 ]] || usage; cmd_mkbucket "$2" "$3" ;;
  *) usage ;;
esac
