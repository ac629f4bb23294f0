#!/usr/bin/env bash
# Every GPU figure from one run, on a machine with a CUDA GPU, in about 10 minutes:
#   1. the parity tests (pytest -m parity: backend scores against sentence-transformers and the Qwen3 model card's
#      recipe, prefix reuse against full prompts) on CUDA, in float32 and then in float16;
#   2. the MiniLM-L6 shape, W1 and W2 through the sidecar, against its in-process ceiling;
#   3. the Qwen3-Reranker-0.6B shape in float16 (RERANK_DTYPE=auto on a GPU), prefix reuse on and off;
#   4. embeddings (`bench embed`, without Infinity): the embedded default through the sidecar on the device (its
#      default settings; "fp32" is RERANK_QUANTIZE=none, which on a GPU still runs RERANK_DTYPE=auto, float16),
#      E1, E2 and E2 beside W1 reranking, against sentence-transformers `encode` in-process.
# It writes docs/bench/gpu-<device>.md, and its JSON results, test reports and logs under --out.
# Nothing is downloaded: the benchmark models are built offline in published shapes (random weights), and the
# only install is scripts/install.sh's .venv (skipped with --python).
#
#   scripts/gpu-check.sh [--out DIR] [--python PATH]
#   scripts/gpu-check.sh --cpu-dry-run [--out DIR] [--python PATH]
#
# --cpu-dry-run runs the same steps on the CPU (CUDA hidden) at tiny sizes, with a tiny random Qwen3 in place of
# the 0.6B shape, in about a minute; its Markdown goes to DIR (default: a new temp directory), not docs/bench/.
# The test suite runs it (tests/test_gpu_check.py). Exit status: 0 when every step passed.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "gpu-check.sh: $*" >&2; exit 2; }

dry_run=false
out=""
python=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-dry-run) dry_run=true ;;
        --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift ;;
        --python) [ $# -ge 2 ] || die "--python needs a path"; python=$2; shift ;;
        -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

if [ -z "$python" ]; then
    scripts/install.sh
    python=.venv/bin/python
fi
# This checkout's code, whatever the environment has installed.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
started=$(date +%s)

if $dry_run; then
    export CUDA_VISIBLE_DEVICES=""  # the sidecars, the ceilings and the tests all see the CPU only
    out=${out:-$(mktemp -d -t rerank-gpu-check-XXXXXX)}
    device_name="CPU dry run"
    markdown="$out/gpu-cpu-dry-run.md"
else
    "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        || die "torch $("$python" -c 'import torch; print(torch.__version__)') sees no CUDA device; run this on a GPU \
machine with a CUDA build of torch in the environment, or pass --cpu-dry-run"
    device_name=$("$python" -c 'import torch; print(torch.cuda.get_device_name(0))')
    slug=$(echo "$device_name" | tr '[:upper:]' '[:lower:]' | sed -e 's/^nvidia //' -e 's/[^a-z0-9]\{1,\}/-/g' -e 's/^-//' -e 's/-$//')
    out=${out:-bench-results/gpu-$slug}
    markdown="docs/bench/gpu-$slug.md"
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
echo "gpu-check.sh: $device_name; results in $out, report $markdown"

# Each step: a name, a time limit in seconds on the GPU machine, a command. Its log is $out/<name>.log and its
# exit status $out/<name>.status (124: over the limit); a failed step is reported and the run goes on. The
# limits add up to under 8 minutes; the dry run gets three times as long, since CI boxes are shared and slow.
failures=0
if $dry_run; then slack=3; else slack=1; fi
step() {
    local name=$1 limit=$(($2 * slack))
    shift 2
    local begin=$(date +%s) status=0
    rm -f "$out/$name".*  # nothing of an earlier run is taken for this one's
    echo "gpu-check.sh: $name (at most ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1 || status=$?
    echo "$status" >"$out/$name.status"
    echo "$(( $(date +%s) - begin ))" >"$out/$name.seconds"
    if [ "$status" -ne 0 ]; then
        failures=$((failures + 1))
        echo "gpu-check.sh: $name failed (exit $status); last lines of $out/$name.log:" >&2
        tail -n 20 "$out/$name.log" >&2
    fi
}
bench=("$python" -m rerank_sidecar.cli bench)

# 1. Parity on the device, float32 then float16 (the dry run: the in-process Qwen3 ones only, to stay quick).
if $dry_run; then
    parity_device=cpu
    parity_tests=(tests/test_qwen3_prefix.py)
else
    parity_device=cuda
    parity_tests=(tests)
fi
for dtype in float32 float16; do
    step "parity-$dtype" 100 env RERANK_TEST_DEVICE=$parity_device RERANK_TEST_DTYPE=$dtype \
        "$python" -m pytest -m parity -q -p no:cacheprovider --junitxml "$out/parity-$dtype.xml" "${parity_tests[@]}"
done

# 2 and 3. Through the sidecar (batched scheduler) against the same backend scoring in-process (the ceiling).
if $dry_run; then
    tiny=(--scale 0.02 --w1-documents 10 --warm-up-clients 1 --max-seconds 20)
    minilm_sizes=("${tiny[@]}" --ceiling-pairs 16)
    qwen3_sizes=("${tiny[@]}" --ceiling-pairs 8)
    qwen3_model=$("$python" - "$out/tiny-qwen3" 2>"$out/tiny-qwen3.log" <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, "tests")
from model_factory import TinyQwen3Cache, build_tiny_qwen3_cache  # the tests' tiny random Qwen3

hf_home = Path(sys.argv[1])
print(TinyQwen3Cache(hf_home, *build_tiny_qwen3_cache(hf_home)).snapshot)
PY
    )
    cache=(--cache-dir "$out/cache")
else
    minilm_sizes=(--scale 1 --max-seconds 30 --ceiling-pairs 2048)
    qwen3_sizes=(--scale 0.5 --max-seconds 40 --ceiling-pairs 512)
    qwen3_model=qwen3-0.6b  # built once under the user's cache (bench/stand_ins.py), about a minute the first time
    cache=()
fi
step minilm-load 90 "${bench[@]}" load --model minilm-cross-encoder --backend torch --schedulers batched \
    --workloads W1,W2 "${minilm_sizes[@]}" "${cache[@]}" --json "$out/minilm-load.json"
step qwen3-load 170 "${bench[@]}" load --model "$qwen3_model" --backend torch --schedulers batched --prefix-reuse on,off \
    --workloads W1,W2 "${qwen3_sizes[@]}" "${cache[@]}" --json "$out/qwen3-load.json"

# 4. Embeddings.
if $dry_run; then
    embed_sizes=(--e1-requests 2 --e2-requests 32 --w1-requests 2 --encode-texts 16 --max-seconds 20)
else
    embed_sizes=(--max-seconds 60)
fi
step embed 240 "${bench[@]}" embed --no-memory "${embed_sizes[@]}" "${cache[@]}" --json "$out/embed.json"

# The report.
mkdir -p "$(dirname "$markdown")"
"$python" - "$out" "$markdown" "$device_name" "$dry_run" "$(( $(date +%s) - started ))" <<'PY'
"""Writes the Markdown report from the step files under the results directory."""
import sys
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime
from pathlib import Path

from rerank_sidecar.bench.load import LoadReport
# bench report's own section writers, so that the GPU tables read like BENCHMARKS.md's.
from rerank_sidecar.bench.report import _embed as embed_section, _load as load_section, _machine, _versions
from rerank_sidecar.bench.support.results import EmbedReport

results, markdown, device_name, dry_run, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "true", sys.argv[5]


def outcome(step: str) -> str | None:
    """None when the step passed, else what went wrong."""
    status = int((results / f"{step}.status").read_text())
    if status == 0:
        return None
    why = "over its time limit" if status in (124, 137) else f"exit status {status}"
    return f"**failed** ({why}; log: `{results / (step + '.log')}`)"


def parity(dtype: str) -> list[str]:
    lines = [f"### {dtype} ({(results / f'parity-{dtype}.seconds').read_text().strip()} s)", ""]
    report = results / f"parity-{dtype}.xml"
    if not report.is_file():
        return lines + [outcome(f"parity-{dtype}") or "no test report", ""]
    rows = []
    for case in ElementTree.parse(report).iter("testcase"):
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        verdict = "**" + kinds.pop() + "**" if kinds else "passed"
        rows.append(f"| `{case.get('classname')}::{case.get('name')}` | {verdict} | {float(case.get('time', 0)):.1f} |")
    failed = outcome(f"parity-{dtype}")
    return lines + ["| test | outcome | s |", "|---|---|---|", *rows, "", *([failed, ""] if failed else [])]


def load(step: str, title: str) -> list[str]:
    failed = outcome(step)
    path = results / f"{step}.json"
    if failed or not path.is_file():
        return [f"## {title}", "", failed or "no results", ""]
    return load_section(LoadReport.model_validate_json(path.read_text()), title)


def embeddings() -> list[str]:
    failed = outcome("embed")
    path = results / "embed.json"
    if failed or not path.is_file():
        return ["## Embeddings throughput", "", failed or "no results", ""]
    return embed_section(EmbedReport.model_validate_json(path.read_text()))


if dry_run:
    head = ["# GPU check: CPU dry run", "",
            "`scripts/gpu-check.sh --cpu-dry-run`: every step of the GPU check on the CPU at tiny sizes, with a tiny "
            "random Qwen3 in place of the 0.6B shape. It proves the script runs; its figures measure nothing."]
else:
    import torch

    head = [f"# GPU check: {device_name}", "",
            f"`scripts/gpu-check.sh` on {device_name} (torch {torch.__version__}, CUDA {torch.version.cuda}). The "
            "models have random weights in the published shapes (`bench/stand_ins.py`): speed is the real models', "
            "the scores mean nothing."]
head += ["", f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, the whole run {seconds} s",
         f"- Machine: {_machine()}", f"- Versions: {_versions()}", ""]
body = ["## Parity tests", "",
        "`pytest -m parity` with RERANK_TEST_DEVICE set to the device: the backend under test runs there, its "
        "reference (sentence-transformers, the Qwen3 model card's recipe, full prompts) in fp32 on the CPU; raw "
        "scores held to `PARITY_ATOL` of tests/conftest.py for the precision (1e-4 in float32).", "",
        *parity("float32"), *parity("float16"),
        *load("minilm-load", "MiniLM-L6 shape through the sidecar, W1 and W2, against the in-process ceiling"),
        *load("qwen3-load", "Qwen3-Reranker-0.6B shape (float16 on a GPU), prefix reuse on and off"),
        *embeddings(), "## Reproduce", "", "```sh", "scripts/gpu-check.sh" + (" --cpu-dry-run" if dry_run else ""), "```", ""]
markdown.write_text("\n".join(head + body))
print(f"gpu-check.sh: wrote {markdown}")
PY
echo "gpu-check.sh: done in $(( $(date +%s) - started )) s, $failures failed step(s)"
[ "$failures" -eq 0 ]
