#!/usr/bin/env bash
# Bring the compose stack up for real and use it: redis, api, worker; reindex through the admin API,
# wait for the API to become healthy on the new bundle, post a photo, check one distinct item per part.
#
#   bash docker/build-offline.sh && bash docker/smoke-test.sh CATALOGUE_DIR PHOTO
#
# Needs ./checkpoints/attention/best.pt (make train). Uses the local base image for redis.
set -euo pipefail
cd "$(dirname "$0")/.."
CATALOGUE_DIR=$(realpath "${1:?catalogue folder}")
PHOTO=${2:?a photo to post}
export CATALOGUE_DIR FASHION_ADMIN_API_KEY="smoke-$RANDOM$RANDOM" REDIS_IMAGE=${REDIS_IMAGE:-fashion-base:bookworm}
export PORT=${PORT:-18000} CHECKPOINTS_DIR=$(realpath checkpoints)
COMPOSE="docker-compose -p fashion-smoke"
trap '$COMPOSE logs --tail 30 api worker >&2 || true; $COMPOSE down -v >/dev/null 2>&1 || true' EXIT

$COMPOSE up -d --no-build redis api worker
url=http://127.0.0.1:$PORT
for _ in $(seq 120); do curl -sf "$url/healthz" >/dev/null && break; sleep 1; done
curl -s "$url/readyz"; echo
job=$(curl -sf -X POST "$url/admin/reindex" -H "X-API-Key: $FASHION_ADMIN_API_KEY" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
echo "reindex job $job"
for _ in $(seq 600); do
  state=$(curl -sf "$url/admin/jobs/$job" -H "X-API-Key: $FASHION_ADMIN_API_KEY" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["state"], j.get("error") or "")')
  case "$state" in succeeded*) break ;; failed*) echo "job failed: $state"; exit 1 ;; esac
  sleep 1
done
echo "job: $state"
for _ in $(seq 60); do
  [ "$(docker inspect -f '{{.State.Health.Status}}' fashion-smoke_api_1)" = healthy ] && break; sleep 2
done
echo "api container: $(docker inspect -f '{{.State.Health.Status}}' fashion-smoke_api_1)"
curl -sf -X POST "$url/recommend?max_parts=4" -F "image=@$PHOTO" | python3 -c '
import json, sys
body = json.load(sys.stdin)
ids = [p["item"]["id"] for p in body["parts"] if p["item"]]
for p in body["parts"]:
    print(p["label"], round(p["score"], 3), p["box"], p["item"] and (p["item"]["id"], p["item"]["metadata"].get("articleType")))
assert ids and len(ids) == len(set(ids)), "items must be distinct"
print("OK: bundle", body["bundle_version"], "-", len(ids), "distinct items")'
