#!/usr/bin/env bash
# The compose stack in one command, from a fresh clone, online or offline, with compose v2 or v1:
#
#   make up                                              # or: bash docker/up.sh [--build]
#   PORT=8080 CATALOGUE_DIR=/path/to/catalogue make up   # another port, another catalogue
#
# 1. picks `docker compose` (v2) or `docker-compose` (v1), whichever exists (docker/compose.sh);
# 2. keeps its settings in .env, which compose reads by itself, so that `ps`, `logs` and `down` need
#    nothing in the shell: on first use a generated admin key (printed once), CATALOGUE_DIR (default
#    $FASHION_DATA_DIR/fashion-product, FASHION_DATA_DIR defaulting to ../shared/data), PORT (default
#    8000) and, where redis:7-alpine cannot be pulled, REDIS_IMAGE (the offline base image); a value
#    given in the shell is used and recorded;
# 3. builds the image when it is missing (or with --build): `compose build` where python:3.11-slim
#    can be pulled, else docker/build-offline.sh (a Debian base made with mmdebstrap, local wheels);
# 4. starts redis, the API and the worker. A first start indexes the catalogue by itself: the API
#    indexes a first slice (FASHION_FIRST_SLICE items, default 1000) before it answers, then the
#    worker adds the rest in the background and the API swaps to it without a restart;
# 5. waits for /readyz to answer 200 and says how long that took (and how much was the build).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=docker/compose.sh
source docker/compose.sh

build=false
for arg in "$@"; do
  case "$arg" in
    --build) build=true ;;
    *) echo "usage: $0 [--build]" >&2; exit 2 ;;
  esac
done
started=$SECONDS

env_get() { if [ -f .env ]; then sed -n "s/^$1=//p" .env | tail -n 1; fi; }
env_put() {  # record KEY=VALUE in .env, replacing an earlier value
  if [ "$(env_get "$1")" != "$2" ]; then
    sed -i "/^$1=/d" .env
    echo "$1=$2" >>.env
  fi
}
if [ ! -f .env ]; then
  (umask 077 && echo "# Written by docker/up.sh; docker compose reads it. Private: it holds the admin key." >.env)
fi

key=${FASHION_ADMIN_API_KEY:-$(env_get FASHION_ADMIN_API_KEY)}
if [ -z "$key" ]; then
  key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  echo "admin key (header X-API-Key), kept in .env and shown only this once: $key"
fi
env_put FASHION_ADMIN_API_KEY "$key"

catalogue=${CATALOGUE_DIR:-$(env_get CATALOGUE_DIR)}
if [ -z "$catalogue" ]; then
  data=${FASHION_DATA_DIR:-../shared/data}
  for candidate in "$data/fashion-product" "$data/ccp/photos"; do
    if [ -d "$candidate" ]; then catalogue=$candidate && break; fi
  done
fi
if [ -z "$catalogue" ] || [ ! -d "$catalogue" ]; then
  echo "no catalogue${catalogue:+ at $catalogue}: set CATALOGUE_DIR to a folder of product photos" \
    "(with styles.csv or another metadata file if there is one), e.g. CATALOGUE_DIR=/srv/catalogue make up" >&2
  exit 1
fi
catalogue=$(realpath "$catalogue")
env_put CATALOGUE_DIR "$catalogue"

port=${PORT:-$(env_get PORT)}
port=${port:-8000}
env_put PORT "$port"
export FASHION_ADMIN_API_KEY=$key CATALOGUE_DIR=$catalogue PORT=$port

# Bind mounts that do not exist are made by Docker, owned by root: make the checkpoints folder here.
if [ -z "${CHECKPOINTS_DIR:-$(env_get CHECKPOINTS_DIR)}" ]; then mkdir -p checkpoints; fi

available() { docker image inspect "$1" >/dev/null 2>&1 || timeout 60 docker pull -q "$1" >/dev/null 2>&1; }

image=${FASHION_IMAGE:-fashion-parts:cpu}
offline=false
build_s=0
if $build || ! docker image inspect "$image" >/dev/null 2>&1; then
  echo "building $image"
  if [ -n "${BASE_IMAGE:-}" ] || available python:3.11-slim; then
    "${COMPOSE[@]}" build api
  else
    offline=true
    echo "python:3.11-slim cannot be pulled: the offline build (docker/build-offline.sh)"
    bash docker/build-offline.sh
  fi
  build_s=$((SECONDS - started))
fi

redis=${REDIS_IMAGE:-$(env_get REDIS_IMAGE)}
if [ -z "$redis" ]; then
  if ! $offline && available redis:7-alpine; then
    redis=redis:7-alpine
  elif docker image inspect fashion-base:bookworm >/dev/null 2>&1; then
    redis=fashion-base:bookworm
    echo "redis:7-alpine cannot be pulled: redis runs from the local base image $redis (REDIS_IMAGE in .env)"
    env_put REDIS_IMAGE "$redis"
  else
    echo "no redis image: pull redis:7-alpine, or make the offline base (bash docker/build-offline.sh)," \
      "or set REDIS_IMAGE to an image with redis-server and redis-cli" >&2
    exit 1
  fi
fi
export REDIS_IMAGE=$redis

api_running() {
  local id
  id=$("${COMPOSE[@]}" ps -q api 2>/dev/null || true)
  [ -n "$id" ] && [ "$(docker inspect -f '{{.State.Running}}' "$id" 2>/dev/null)" = true ]
}
if ! api_running && (echo >"/dev/tcp/127.0.0.1/$port") >/dev/null 2>&1; then
  echo "port $port is taken: choose another, e.g. PORT=8080 make up (recorded in .env)" >&2
  exit 1
fi

"${COMPOSE[@]}" up -d --no-build

status() {
  if command -v curl >/dev/null 2>&1; then
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" || true
  else
    python3 -c 'import sys, urllib.request, urllib.error
try: print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as e: print(e.code)
except Exception: print("000")' "$1"
  fi
}
url=http://127.0.0.1:$port
echo "waiting for $url/readyz (a first start indexes a first slice of $catalogue before answering)"
deadline=$((SECONDS + ${UP_TIMEOUT_S:-1800}))
next_note=$((SECONDS + 30))
until [ "$(status "$url/readyz")" = 200 ]; do
  if ((SECONDS > deadline)); then
    "${COMPOSE[@]}" logs --tail 40 api >&2 || true
    echo "the API did not become ready in ${UP_TIMEOUT_S:-1800} s (logs above)" >&2
    exit 1
  fi
  if ((SECONDS > next_note)); then
    echo "  still starting after $((SECONDS - started)) s; follow it with: bash docker/compose.sh logs -f api"
    next_note=$((SECONDS + 30))
  fi
  sleep 2
done
echo "ready after $((SECONDS - started)) s (of which the image build: $build_s s): $url"
echo "  a first bundle may hold only a first slice: the worker adds the rest and the API swaps to it"
echo "  recommend: curl -F image=@photo.jpg $url/recommend     docs: $url/docs"
echo "  follow:    bash docker/compose.sh logs -f api worker   stop: make down (bash docker/compose.sh down)"
