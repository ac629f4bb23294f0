#!/usr/bin/env bash
# Checks that the project's pins resolve in one environment together with cocoindex-code's local-embeddings extra,
# so a user can run both from one venv: pip's resolver, dry run, into an empty throwaway venv (nothing is
# installed). Prints the versions it chose; exits non-zero, with pip's explanation, on a conflict.
# Extra arguments are added to the requirements (a way to see it fail: "sentence-transformers==0.0.1").
set -euo pipefail
cd "$(dirname "$0")/.."

COCOINDEX_CODE="cocoindex-code[embeddings-local]==${COCOINDEX_CODE_VERSION:-0.2.42}"
python=${PYTHON:-.venv/bin/python}
die() { echo "check-cocoindex-pins.sh: $*" >&2; exit 1; }
[ -x "$python" ] || die "no Python at $python (run scripts/install.sh, or set PYTHON)"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# The empty environment is only the target; the project's own pip resolves into it (pip --python).
"$python" -m venv --without-pip "$scratch/venv"
if ! "$python" -m pip --python "$scratch/venv/bin/python" install --dry-run --report "$scratch/report.json" \
        ".[test,ray]" "$COCOINDEX_CODE" "$@" >"$scratch/pip.log" 2>&1; then
    # pip's explanation (the conflict's causes come last), without its long lists of every version it saw
    grep -v "is ignored: it is neither a file nor a directory" "$scratch/pip.log" | tail -n 25 | cut -c1-400 >&2 || true
    die "the project's pins do not resolve together with $COCOINDEX_CODE $*"
fi
"$python" - "$scratch/report.json" "$COCOINDEX_CODE" <<'PY'
import json
import sys

report, cocoindex_code = sys.argv[1], sys.argv[2]
chosen = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in json.load(open(report))["install"]}
shown = ", ".join(f"{name} {chosen[name]}" for name in ("cocoindex-code", "cocoindex", "sentence-transformers", "torch"))
print(f"check-cocoindex-pins.sh: rerank-sidecar[test,ray] resolves with {cocoindex_code}: {shown}")
PY
