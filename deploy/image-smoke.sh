#!/usr/bin/env bash
# The container image, built and run: `make image-smoke` (as root; README "The image, built and run").
#
# Builds the Dockerfile on a Debian bookworm base made here with debootstrap (no registry here
# serves python:3.11-slim, postgres:16 or redis:7), with the locked service wheels built on the
# host; starts docker-compose.yml with deploy/smoke/compose.smoke.yml on top (PostgreSQL and
# Redis as containers from the same kind of base), runs its migration job, waits for /readyz,
# runs a smoke (token, PUT then GET, enrich, /metrics), stops the API with SIGTERM and times it
# against the drain time, reports the image's size, and tears it all down. Exits non-zero on any
# failure. It installs what it lacks (docker.io, docker-compose, debootstrap) and starts dockerd
# when none answers (and stops it again after). It touches no PostgreSQL or Redis of the machine.
#
# Cached between runs: the debootstrap root file system in $CACHE, and the base images in
# Docker (tagged by a hash of their Dockerfile), so a second run builds only the enrich image.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CACHE=${ENRICH_IMAGE_CACHE:-/var/cache/enrich-image}
PROJECT=enrich-smoke
IMAGE=enrich:smoke
DEBIAN_IMAGE=enrich-ci/debian:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DRAIN_BUDGET=25 # ENRICH_SHUTDOWN_DRAIN_SECONDS + ENRICH_SHUTDOWN_TIMEOUT_SECONDS (5 + 20)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3.11
export DOCKER_BUILDKIT=0 # the classic builder: BuildKit would fetch its Dockerfile frontend
DOCKER=/usr/bin/docker   # Debian's client, the daemon's own version
COMPOSE=(docker-compose -p "$PROJECT" -f docker-compose.yml -f deploy/smoke/compose.smoke.yml)
T0=$SECONDS
step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - T0))"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

mkdir -p "$CACHE"
STARTED_DOCKERD=
cleanup() {
  local rc=$?
  set +e
  if [ -n "${COMPOSE_UP:-}" ]; then
    if [ "$rc" != 0 ]; then
      echo "-- logs (failure) --"
      "${COMPOSE[@]}" logs --no-color --tail=60 2>&1 | tail -150
    fi
    echo "-- teardown --"
    "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 30 2>&1 | tail -n 20
  fi
  rm -rf "$ROOT/wheelhouse"
  if [ -n "$STARTED_DOCKERD" ]; then
    kill "$STARTED_DOCKERD" && wait "$STARTED_DOCKERD" 2>/dev/null
    echo "stopped the dockerd this script started (pid $STARTED_DOCKERD)"
  fi
  exit "$rc"
}
trap cleanup EXIT

step "tools"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
if ! $DOCKER info >/dev/null 2>&1; then
  echo "starting dockerd (log: $CACHE/dockerd.log)"
  dockerd --data-root /var/lib/docker >"$CACHE/dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 60); do
    $DOCKER info >/dev/null 2>&1 && break
    kill -0 "$STARTED_DOCKERD" 2>/dev/null || fail "dockerd exited: $(tail -5 "$CACHE/dockerd.log")"
    sleep 1
  done
  $DOCKER info >/dev/null 2>&1 || fail "dockerd did not answer in 60 s"
fi
$DOCKER version --format 'docker engine {{.Server.Version}}'
docker-compose version --short | sed 's/^/docker-compose /'

step "Debian base ($DEBIAN_IMAGE)"
if ! $DOCKER image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1; then
  tarball=$CACHE/bookworm-minbase.tar
  if [ ! -s "$tarball" ]; then
    rootfs=$CACHE/rootfs.tmp
    rm -rf "$rootfs"
    mkdir -p "$CACHE/debs"
    echo "debootstrap --variant=minbase bookworm (log: $CACHE/debootstrap.log)"
    debootstrap --variant=minbase --cache-dir="$CACHE/debs" bookworm "$rootfs" "$MIRROR" \
      >"$CACHE/debootstrap.log" 2>&1 || fail "debootstrap: $(tail -5 "$CACHE/debootstrap.log")"
    # As in Debian's own images: the updates and security suites, no service starts from
    # package scripts, no documentation or translations, no package lists or archives kept.
    printf '%s\n' "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
      "deb ${MIRROR%/debian}/debian-security bookworm-security main" >"$rootfs/etc/apt/sources.list"
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod +x "$rootfs/usr/sbin/policy-rc.d"
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
      'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
      >"$rootfs/etc/dpkg/dpkg.cfg.d/excludes"
    echo 'APT::Install-Recommends "false";' >"$rootfs/etc/apt/apt.conf.d/99no-recommends"
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$rootfs"/usr/share/{man,info}/* "$rootfs"/var/cache/apt/archives/*.deb \
      "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
      -exec rm -rf {} +
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  $DOCKER import --change 'CMD ["/bin/bash"]' "$tarball" "$DEBIAN_IMAGE" >/dev/null
fi
$DOCKER image inspect "$DEBIAN_IMAGE" --format '{{.Size}}' | awk '{printf "debian minbase: %.0f MB\n", $1/1e6}'

# A base image per Dockerfile in deploy/smoke, tagged by the hash of that file and the Debian base.
base_image() {
  local name=$1 file=deploy/smoke/$1.Dockerfile tag
  tag=enrich-ci/$name:$(cat "$file" deploy/smoke/*.sh <($DOCKER image inspect "$DEBIAN_IMAGE" --format '{{.Id}}') |
    sha1sum | cut -c1-12)
  if ! $DOCKER image inspect "$tag" >/dev/null 2>&1; then
    echo "building $tag" >&2
    $DOCKER build --network host --quiet --force-rm --build-arg DEBIAN="$DEBIAN_IMAGE" -t "$tag" \
      -f "$file" deploy/smoke >/dev/null || fail "building $file"
  fi
  echo "$tag"
}
step "service base images"
PYTHON_BASE=$(base_image python)
export SMOKE_POSTGRES_IMAGE SMOKE_REDIS_IMAGE SMOKE_IMAGE=$IMAGE
SMOKE_POSTGRES_IMAGE=$(base_image postgres)
SMOKE_REDIS_IMAGE=$(base_image redis)
echo "$PYTHON_BASE $SMOKE_POSTGRES_IMAGE $SMOKE_REDIS_IMAGE"

step "wheels on the host (requirements/service.lock, hashes checked, and enrich)"
rm -rf wheelhouse
mkdir wheelhouse
# The pins that apply to the base's Python (its markers, not the host's), downloaded here (kept
# in $CACHE/wheels for the next run): the build's pip has no index and finds them in ./wheelhouse.
$DOCKER run --rm -i --network none "$PYTHON_BASE" python3.11 - <deploy/smoke/target-env.py >wheelhouse/target-env.json
"$PYTHON" deploy/smoke/pins-for.py requirements/service.lock wheelhouse/target-env.json \
  >wheelhouse/pins.txt
download=("$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all:
  --require-hashes -r wheelhouse/pins.txt -d "$CACHE/wheels")
# From the cache alone when it has every pin; from the index otherwise.
"${download[@]}" --no-index --find-links "$CACHE/wheels" >/dev/null 2>&1 ||
  "${download[@]}" 2> >(grep -v 'is ignored' >&2)
cp "$CACHE"/wheels/*.whl wheelhouse/ # older pins too: the build installs only the locked ones
if "$PYTHON" -c 'import hatchling' 2>/dev/null; then
  "$PYTHON" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w wheelhouse .
else
  "$PYTHON" -m pip wheel -q --disable-pip-version-check --no-deps -w wheelhouse .
fi
echo "$(wc -l <wheelhouse/pins.txt) pins for Python $(sed -E 's/.*"python_full_version": "([^"]+)".*/\1/' \
  wheelhouse/target-env.json), and $(cd wheelhouse && ls enrich-*.whl)"

step "docker build --build-arg BASE=$PYTHON_BASE"
build_start=$SECONDS
previous=$($DOCKER image inspect "$IMAGE" --format '{{.Id}}' 2>/dev/null || true)
$DOCKER build --network host --force-rm --build-arg BASE="$PYTHON_BASE" -t "$IMAGE" . \
  >"$CACHE/build.log" 2>&1 || fail "docker build: $(tail -20 "$CACHE/build.log")"
BUILD_SECONDS=$((SECONDS - build_start))
if [ -n "$previous" ] && [ "$previous" != "$($DOCKER image inspect "$IMAGE" --format '{{.Id}}')" ]; then
  $DOCKER rmi "$previous" >/dev/null 2>&1 || true # the last run's image
fi
IMAGE_MB=$($DOCKER image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f", $1/1e6}')
BASE_MB=$($DOCKER image inspect "$PYTHON_BASE" --format '{{.Size}}' | awk '{printf "%.0f", $1/1e6}')
echo "built $IMAGE in ${BUILD_SECONDS}s: ${IMAGE_MB} MB (base ${BASE_MB} MB + venv $((IMAGE_MB - BASE_MB)) MB)"
[ "$($DOCKER image inspect "$IMAGE" --format '{{.Config.User}}')" = "10001:10001" ] ||
  fail "the image does not run as 10001"
$DOCKER run --rm "$IMAGE" enrich --version

step "docker-compose up (postgres, redis, migrate, api)"
API_HOST_PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export API_HOST_PORT
BASE_URL=http://127.0.0.1:$API_HOST_PORT
"${COMPOSE[@]}" down --volumes --remove-orphans >/dev/null 2>&1 || true # a run killed before
COMPOSE_UP=1
"${COMPOSE[@]}" up -d --no-build 2>&1 | tail -n 20
migrate_id=$("${COMPOSE[@]}" ps -q migrate)
[ "$($DOCKER wait "$migrate_id")" = 0 ] || fail "the migration job failed"
"${COMPOSE[@]}" logs --no-color migrate | tail -n 5
api_id=$("${COMPOSE[@]}" ps -q api)

step "waiting for $BASE_URL/readyz"
for _ in $(seq 120); do
  ready=$(curl -s -o /dev/null -w '%{http_code}' "$BASE_URL/readyz" || true)
  [ "$ready" = 200 ] && break
  sleep 1
done
[ "$ready" = 200 ] || fail "/readyz answered ${ready:-nothing}"
curl -s "$BASE_URL/readyz"
echo
for _ in $(seq 60); do
  health=$($DOCKER inspect "$api_id" --format '{{.State.Health.Status}}')
  [ "$health" = healthy ] && break
  sleep 1
done
echo "docker health: $health"
[ "$health" = healthy ] || fail "the container's HEALTHCHECK did not pass"
[ "$($DOCKER exec "$api_id" id -u)" = 10001 ] || fail "the API runs as root"
echo "runs as: $($DOCKER exec "$api_id" id)"

step "smoke"
client=$("${COMPOSE[@]}" exec -T api enrich clients create --name image-smoke \
  --scopes "profiles:read profiles:write" --json)
client_id=$(echo "$client" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["client_id"])')
client_secret=$(echo "$client" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["client_secret"])')
echo "client created: $client_id"
"$PYTHON" deploy/smoke/smoke.py "$BASE_URL" "$client_id" "$client_secret"
# /metrics answers the networks of ENRICH_METRICS_ALLOW_NETWORKS (loopback by default): scraped
# inside the container, as a sidecar would.
metrics=$($DOCKER exec "$api_id" python -c \
  'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8000/metrics", timeout=5).read().decode())')
echo "$metrics" | grep -E '^enrich_(http_)?requests?_total|^enrich_.*_total' | head -n 5
echo "$metrics" | grep -q '^# TYPE' || fail "/metrics has no metrics"
echo "ok   GET /metrics ($(echo "$metrics" | grep -c '^# TYPE') metric families)"

step "SIGTERM: docker stop (grace 30 s; drain + request timeout ${DRAIN_BUDGET} s)"
stop_start=$(date +%s.%N)
$DOCKER stop -t 30 "$api_id" >/dev/null
STOP_SECONDS=$(awk -v a="$stop_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
exit_code=$($DOCKER inspect "$api_id" --format '{{.State.ExitCode}}')
echo "stopped in $STOP_SECONDS s, exit code $exit_code; the API's last lines:"
$DOCKER logs "$api_id" 2>&1 | grep '"event":"shutdown' | tail -n 4 | cut -c1-200
# 0, or 143: uvicorn stops gracefully, then raises the SIGTERM it caught again; 137 would be
# the SIGKILL at the end of the grace period.
case $exit_code in 0 | 143) ;; *) fail "exit code $exit_code after SIGTERM" ;; esac
awk -v t="$STOP_SECONDS" -v b="$DRAIN_BUDGET" 'BEGIN { exit !(t < b) }' ||
  fail "the stop took longer than the drain budget"

step "done"
printf 'image %s: %s MB, built in %s s; SIGTERM stop %s s; whole run %s s\n' \
  "$IMAGE" "$IMAGE_MB" "$BUILD_SECONDS" "$STOP_SECONDS" "$((SECONDS - T0))"
echo "IMAGE SMOKE PASSED"
