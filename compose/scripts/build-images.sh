#!/usr/bin/env bash
# Build the pool's images locally, with no registry: `build-images.sh [playwright|fake|app|redis|stack|all]`.
#   cinnamon-pool/playwright-mcp:local  the real @playwright/mcp (npm) + Debian's Chromium
#   cinnamon-pool/fake-mcp:test         the test stand-in (compose/images/fake-mcp/fake_mcp.py)
#   cinnamon-pool/app:local             supervisor and rq workers, for the compose stack ("stack")
#   cinnamon-pool/redis:local           Debian's redis-server, for the compose stack ("stack")
# Both are FROM scratch and expect the host's /usr bind-mounted read-only at run time.
# A rebuild with unchanged inputs is a cache hit; an existing npm install is reused.
set -euo pipefail

PLAYWRIGHT_MCP_VERSION=${PLAYWRIGHT_MCP_VERSION:-0.0.83}
here=$(cd "$(dirname "$0")/.." && pwd)       # compose/
top=$(cd "$here/.." && pwd)
build=${CINNAMON_BUILD_DIR:-$top/.build/images}
which=${1:-all}
say() { printf '[images] %s\n' "$*"; }

base_rootfs() {
  # The files a scratch image needs around a bind-mounted /usr: merged-/usr links, a user,
  # name-service and font configuration, and writable-by-tmpfs mount points.
  local root=$1
  rm -rf "$root" && mkdir -p "$root"/{etc,app,tmp,proc,sys,dev,usr,sbin}  # /sbin real: docker-init mounts there
  for d in bin lib lib64; do ln -s "usr/$d" "$root/$d"; done
  printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nmcp:x:1000:1000:mcp:/tmp:/usr/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nmcp:x:1000:\n' >"$root/etc/group"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
  if [ -d /etc/fonts ]; then cp -a /etc/fonts "$root/etc/fonts"; fi
  chmod 1777 "$root/tmp"
}

build_image() {
  # Every image is `FROM scratch` + `COPY rootfs/ /`; the rest of its Dockerfile is metadata
  # (USER, ENV, WORKDIR, EXPOSE, ENTRYPOINT, CMD, LABEL), which `docker import --change` applies.
  # No builder runs: the legacy one is deprecated, and BuildKit needs the buildx plugin.
  local tag=$1 context=$2 changes=() instruction
  while IFS= read -r instruction; do changes+=(--change "$instruction"); done < <(dockerfile_metadata "$context/Dockerfile")
  say "docker import $tag"
  # Everything is root's, but for what is uid 1000's here (the app image's key folder).
  printf '+1000 +1000\n' > "$context/ids.map"
  tar -C "$context/rootfs" --owner=0 --group=0 --owner-map="$context/ids.map" --group-map="$context/ids.map" --numeric-owner -c . \
    | docker import "${changes[@]}" - "$tag" >/dev/null
  say "built $tag ($(docker image inspect -f '{{.Size}}' "$tag") bytes without the host /usr)"
}

dockerfile_metadata() {
  # The Dockerfile's instructions but FROM and COPY, one per line: comments and blank lines
  # dropped, continuation lines joined.
  grep -v '^[[:space:]]*#' "$1" | sed -e ':a' -e '/\\$/{N;s/\\\n[[:space:]]*/ /;ba' -e '}' | grep -Ev '^[[:space:]]*(FROM|COPY)[[:space:]]|^[[:space:]]*$'
}

build_fake() {
  local ctx=$build/fake-mcp
  mkdir -p "$ctx"
  base_rootfs "$ctx/rootfs"
  cp "$here/images/fake-mcp/fake_mcp.py" "$ctx/rootfs/app/fake_mcp.py"
  cp "$here/images/fake-mcp/Dockerfile" "$ctx/Dockerfile"
  build_image cinnamon-pool/fake-mcp:test "$ctx"
}

build_playwright() {
  [ -x /usr/lib/chromium/chromium ] || { echo "[images] ERROR: /usr/lib/chromium/chromium is missing: run compose/scripts/services.sh --browser (installs Debian's chromium)" >&2; exit 1; }
  command -v npm >/dev/null || { echo "[images] ERROR: npm is missing: apt-get install npm" >&2; exit 1; }
  local ctx=$build/playwright-mcp npm_dir=$build/npm-playwright-mcp-$PLAYWRIGHT_MCP_VERSION
  if [ ! -f "$npm_dir/node_modules/@playwright/mcp/cli.js" ]; then
    say "npm install @playwright/mcp@$PLAYWRIGHT_MCP_VERSION"
    mkdir -p "$npm_dir"
    (cd "$npm_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund \
      --omit=dev --prefix . "@playwright/mcp@$PLAYWRIGHT_MCP_VERSION")
  fi
  mkdir -p "$ctx"
  base_rootfs "$ctx/rootfs"
  cp -a "$npm_dir/node_modules" "$ctx/rootfs/app/node_modules"
  cp "$here/images/playwright-mcp/door.js" "$ctx/rootfs/app/door.js"
  cp "$here/images/playwright-mcp/trace-options.js" "$ctx/rootfs/app/trace-options.js"
  cp "$here/images/playwright-mcp/Dockerfile" "$ctx/Dockerfile"
  build_image cinnamon-pool/playwright-mcp:local "$ctx"
}

build_app() {
  # The package and its dependencies for the host's Debian python3 (same 3.11 ABI as the
  # project's venv, whose pip installs them); the workers' job modules beside them.
  local ctx=$build/app python=${PYTHON_FOR_IMAGES:-$top/.venv/bin/python}
  [ -x "$python" ] || { echo "[images] ERROR: $python is missing: run make venv" >&2; exit 1; }
  mkdir -p "$ctx"
  base_rootfs "$ctx/rootfs"
  # Install from a fresh copy of the sources: setuptools' build/ folder in a source tree can
  # hold stale copies of modules.
  rm -rf "$ctx/src" && mkdir -p "$ctx/src"
  cp -r "$top/pyproject.toml" "$top/README.md" "$top/LICENSE" "$top/cinnamon_pool" "$ctx/src/"
  find "$ctx/src" -name __pycache__ -prune -exec rm -rf {} +
  say "pip install --target (cinnamon-pool and its dependencies)"
  # async-timeout: redis-py needs it below Python 3.11.3, which Debian's 3.11.2 is and the venv's is not.
  "$python" -m pip install --quiet --disable-pip-version-check --no-compile --target "$ctx/rootfs/app/site" "$ctx/src" async-timeout >/dev/null
  cp -r "$top/workers" "$ctx/rootfs/app/workers"
  find "$ctx/rootfs/app/workers" -name __pycache__ -prune -exec rm -rf {} +
  # The folder of the host key behind the containers' door secrets (cinnamon_pool/door.py): a
  # named volume in compose, so the supervisor (root) and the gateway (uid 1000) share the key.
  mkdir -p "$ctx/rootfs/var/lib/cinnamon-pool" && chown 1000:1000 "$ctx/rootfs/var/lib/cinnamon-pool" && chmod 700 "$ctx/rootfs/var/lib/cinnamon-pool"
  cp "$here/images/app/Dockerfile" "$ctx/Dockerfile"
  build_image cinnamon-pool/app:local "$ctx"
}

build_redis() {
  local ctx=$build/redis
  mkdir -p "$ctx"
  base_rootfs "$ctx/rootfs"
  mkdir -p "$ctx/rootfs/data" && chmod 1777 "$ctx/rootfs/data"
  cp "$here/images/redis/Dockerfile" "$ctx/Dockerfile"
  build_image cinnamon-pool/redis:local "$ctx"
}

case "$which" in
  fake) build_fake ;;
  playwright) build_playwright ;;
  app) build_app ;;
  redis) build_redis ;;
  stack) build_app; build_redis ;;
  all) build_fake; build_playwright; build_app; build_redis ;;
  *) echo "build-images.sh: unknown image '$which' (known: playwright, fake, app, redis, stack, all)" >&2; exit 2 ;;
esac
