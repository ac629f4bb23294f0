#!/usr/bin/env bash
# Installs on first run, loads .env then .env.local, and serves the sidecar with one uvicorn worker.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
set -a
[ -f .env ] && . ./.env
[ -f .env.local ] && . ./.env.local
set +a
exec .venv/bin/rerank-sidecar serve "$@"
