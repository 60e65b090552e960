#!/usr/bin/env bash
# Bring up what cinnamon-pool needs on this machine, idempotently:
#   - a Redis at $CINNAMON_REDIS_URL, else a local redis-server on 127.0.0.1:6379;
#   - a Docker daemon answering `docker info`, else Debian's docker.io with dockerd in the
#     background;
#   - Debian's chromium, node and npm for the playwright-mcp image, and docker-compose for the
#     compose stack (only with --browser).
# Nothing is installed or started when it is already there, so a second run changes nothing.
# Processes it starts are recorded by pid under $CINNAMON_RUN_DIR (default .run/).
set -euo pipefail

want_browser=0
for arg in "$@"; do
  case "$arg" in
    --browser) want_browser=1 ;;
    *) echo "services.sh: unknown argument '$arg' (known: --browser)" >&2; exit 2 ;;
  esac
done

run_dir=${CINNAMON_RUN_DIR:-.run}
mkdir -p "$run_dir"
say() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

apt_updated=0
apt_install() {
  # Install Debian packages by name; the mirror comes from the machine's own apt sources.
  if [ "$(id -u)" != 0 ]; then
    die "missing: $*. Install them as root (apt-get install $*) or run this script as root."
  fi
  command -v apt-get >/dev/null || die "missing: $*, and there is no apt-get to install them with."
  if [ "$apt_updated" = 0 ]; then
    say "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
  say "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- Redis ------------------------------------------------------------------------------
redis_url=${CINNAMON_REDIS_URL:-redis://127.0.0.1:6379/0}
redis_answers() {
  command -v redis-cli >/dev/null && [ "$(redis-cli -u "$redis_url" ping 2>/dev/null)" = PONG ]
}
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  apt_install redis-server redis-tools
fi
if redis_answers; then
  say "redis answers at $redis_url"
else
  case "$redis_url" in
    redis://127.0.0.1:6379*|redis://localhost:6379*) ;;
    *) die "no Redis answers at CINNAMON_REDIS_URL=$redis_url, and it is not the local default to start." ;;
  esac
  say "starting redis-server on 127.0.0.1:6379 (AOF on, noeviction)"
  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes \
    --pidfile "$PWD/$run_dir/redis.pid" --logfile "$PWD/$run_dir/redis.log" \
    --dir "$PWD/$run_dir" --appendonly yes --maxmemory-policy noeviction --save ''
  for _ in $(seq 50); do redis_answers && break; sleep 0.1; done
  redis_answers || die "redis-server did not answer; see $run_dir/redis.log"
fi

# --- Docker -----------------------------------------------------------------------------
docker_answers() { docker info >/dev/null 2>&1; }
if ! command -v dockerd >/dev/null; then
  apt_install docker.io iptables
fi
if docker_answers; then
  say "docker daemon answers"
else
  [ "$(id -u)" = 0 ] || die "no Docker daemon answers and starting dockerd needs root (sudo dockerd &)."
  say "starting dockerd (log: $run_dir/dockerd.log)"
  nohup dockerd --pidfile "$PWD/$run_dir/dockerd.pid" >"$run_dir/dockerd.log" 2>&1 &
  for _ in $(seq 150); do docker_answers && break; sleep 0.2; done
  docker_answers || die "dockerd did not answer within 30 s; see $run_dir/dockerd.log"
fi

# --- Browser toolchain for the playwright-mcp image --------------------------------------
if [ "$want_browser" = 1 ]; then
  missing=()
  [ -x /usr/lib/chromium/chromium ] || missing+=(chromium)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  [ -d /usr/share/fonts/truetype/dejavu ] || missing+=(fonts-dejavu-core)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
  say "chromium $(/usr/lib/chromium/chromium --version 2>/dev/null | awk '{print $2}'), node $(node --version)"
fi
say "ready"
