#!/usr/bin/env bash
# Installs on first run, then serves the sidecar with one uvicorn worker.
# Settings come from the environment, then .env.local, then .env in the repository root (read by the
# settings class, so a variable already set in the environment is never overridden by a file).
# Extra arguments go to `rerank-sidecar serve` (e.g. --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/rerank-sidecar serve "$@"
