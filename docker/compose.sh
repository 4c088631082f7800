#!/usr/bin/env bash
# The compose command of this machine: v2 (`docker compose`) or v1 (`docker-compose`), whichever
# exists; COMPOSE="docker-compose" (or any command) chooses. Sourced by docker/up.sh and
# docker/smoke-test.sh, which then run "${COMPOSE[@]}"; run directly, it passes its arguments on:
#
#   bash docker/compose.sh ps            # or: logs -f worker | down | restart worker
#
# Compose reads .env in the repository root (docker/up.sh writes it), so no variable is needed here.
if [ -n "${COMPOSE:-}" ]; then
  read -r -a COMPOSE <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
else
  echo "no compose found: install Debian's docker-compose (apt-get install docker-compose) or Docker's compose plugin" >&2
  if [ "${BASH_SOURCE[0]}" = "$0" ]; then exit 1; else return 1; fi
fi

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "$0")/.."
  exec "${COMPOSE[@]}" "$@"
fi
