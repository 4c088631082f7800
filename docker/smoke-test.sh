#!/usr/bin/env bash
# Bring the compose stack up for real and use it, as a first start does: the API indexes a first
# slice of the catalogue by itself and answers; the worker adds the rest and the API swaps to the
# whole catalogue; then a reindex through the admin API; a photo posted after each step must get
# one distinct item per part.
#
#   bash docker/build-offline.sh && bash docker/smoke-test.sh CATALOGUE_DIR PHOTO
#
# It serves the committed model inside the image (weights/ccp-attention.pt): nothing of ./checkpoints
# is used, and nothing is created there. Compose v2 or v1, whichever exists (COMPOSE=... chooses);
# redis from the local base image unless REDIS_IMAGE is set; FIRST_SLICE items (default 200) first.
# Its own project (fashion-smoke), port (PORT, default 18000) and volumes, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=docker/compose.sh
source docker/compose.sh
COMPOSE+=(-p fashion-smoke)
CATALOGUE_DIR=$(realpath "${1:?catalogue folder}")
PHOTO=${2:?a photo to post}
export CATALOGUE_DIR FASHION_ADMIN_API_KEY="smoke-$RANDOM$RANDOM" REDIS_IMAGE=${REDIS_IMAGE:-fashion-base:bookworm}
export PORT=${PORT:-18000} FASHION_FIRST_SLICE=${FIRST_SLICE:-200}
unset FASHION_CHECKPOINT  # the image's model, whatever this shell serves locally
CHECKPOINTS_DIR=$(mktemp -d)  # mounted (read-only, unused) instead of ./checkpoints
export CHECKPOINTS_DIR
cleanup() {
  "${COMPOSE[@]}" logs --tail 30 api worker >&2 || true
  "${COMPOSE[@]}" down -v >/dev/null 2>&1 || true
  rm -rf "$CHECKPOINTS_DIR"
}
trap cleanup EXIT
echo "compose: ${COMPOSE[*]}"
url=http://127.0.0.1:$PORT

post_photo() {  # one distinct item per part, on the bundle the API says it serves
  curl -sf -X POST "$url/recommend?max_parts=4" -F "image=@$PHOTO" | python3 -c '
import json, sys
body = json.load(sys.stdin)
ids = [p["item"]["id"] for p in body["parts"] if p["item"]]
for p in body["parts"]:
    print(" ", p["label"], round(p["score"], 3), p["box"], p["item"] and (p["item"]["id"], p["item"]["metadata"].get("articleType")))
assert ids and len(ids) == len(set(ids)), "items must be distinct"
print("  OK: bundle", body["bundle_version"], "-", len(ids), "distinct items")'
}
in_api() { "${COMPOSE[@]}" exec -T api python -c "$1"; }
BUNDLE='from indexer.bundle import BundleStore; b = BundleStore("/data/bundles").open()'

started=$SECONDS
"${COMPOSE[@]}" up -d --no-build redis api worker
api=$("${COMPOSE[@]}" ps -q api)  # the container, whatever this compose names it

echo "1. first start: the API indexes a first slice ($FASHION_FIRST_SLICE items) by itself"
for _ in $(seq 900); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz")" = 200 ] && break; sleep 1; done
curl -sf "$url/readyz"
echo
echo "  ready after $((SECONDS - started)) s, with no admin call"
in_api "$BUNDLE; print('  first bundle:', b.version, len(b.items), 'items, complete:', b.complete)"
post_photo

echo "2. the worker adds the rest of the catalogue; the API swaps to it"
for _ in $(seq 1800); do in_api "$BUNDLE; raise SystemExit(not b.complete)" 2>/dev/null && break; sleep 2; done
in_api "$BUNDLE; print('  bundle:', b.version, len(b.items), 'items, complete:', b.complete); assert b.complete"
full=$(in_api "$BUNDLE; print(b.version)")
for _ in $(seq 60); do
  [ "$(curl -sf "$url/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bundle_version"])')" = "$full" ] && break
  sleep 1
done
echo "  whole catalogue served after $((SECONDS - started)) s"
post_photo

echo "3. a reindex through the admin API"
job=$(curl -sf -X POST "$url/admin/reindex" -H "X-API-Key: $FASHION_ADMIN_API_KEY" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
echo "  reindex job $job"
for _ in $(seq 1200); do
  state=$(curl -sf "$url/admin/jobs/$job" -H "X-API-Key: $FASHION_ADMIN_API_KEY" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["state"], j.get("error") or "")')
  case "$state" in succeeded*) break ;; failed*) echo "job failed: $state"; exit 1 ;; esac
  sleep 1
done
echo "  job: $state"
for _ in $(seq 60); do
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$api")" = healthy ] && break; sleep 2
done
echo "  api container: $(docker inspect -f '{{.State.Health.Status}}' "$api")"
post_photo
echo "OK after $((SECONDS - started)) s"
