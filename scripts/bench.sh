#!/usr/bin/env bash
# Runs every benchmark into bench-results/ and writes BENCHMARKS.md (loopback only, each run bounded).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
out=bench-results
mkdir -p "$out"
bench() { .venv/bin/rerank-sidecar bench "$@"; }
bench backends --quality-topics 20 --json "$out/backends.json"
bench load --model minilm-cross-encoder --scale 0.5 --json "$out/load.json"
# The sweep: at least 200 requests at each point (each of N clients sends ceil(200 / N)), so that its p99 is
# not one slow request: 1,232 requests per scheduler at about 20 requests/s here, about 2 minutes for both.
bench load --model minilm-cross-encoder --sweep 1,2,4,8,16,32 --sweep-total-requests 200 --ceiling-pairs 0 \
    --json "$out/sweep.json" --plot "$out/sweep.png"
# Ray Serve with 1 and 2 replicas, each pinned to 1 CPU and 1 inference thread (needs the [ray] extra).
bench load --model minilm-cross-encoder --ray-replicas 1,2 --ray-replica-cpus 1 --schedulers batched \
    --workloads W1,W2 --scale 0.5 --ceiling-pairs 0 --json "$out/ray.json"
# A/B in one run: the sidecar (MiniLM-L6 shape, int8) against the seed's one-lock design (bench/support/onelock.py).
bench load --model minilm-cross-encoder --quantize int8 --schedulers batched --one-lock --scale 0.25 \
    --max-seconds 90 --ceiling-pairs 0 --json "$out/ab.json"
# The embedded default with default settings (RERANK_QUANTIZE=auto) and with int8 set, side by side.
bench load --model builtin --quantize auto,int8 --schedulers batched --workloads W1,W2 --scale 0.25 \
    --max-seconds 90 --ceiling-pairs 0 --json "$out/builtin.json"
# Memory of N consumers, and of one sidecar serving two models against two sidecars, loaded and unloaded.
bench memory --consumers 1,2,4 --models --json "$out/memory.json"
# W2 sent to two models of one sidecar at once, against W2 on each model alone.
bench models --scale 0.25 --max-seconds 90 --json "$out/models-load.json"
# Qwen3-Reranker-0.6B's shape (random weights, real tokenizer, built once under the cache): under 1 pair/s
# in fp32 here, so the runs are small. One inference thread: on these 2 shared cores, two threads' figures
# swung 2x between passes of the same configuration. In-process: full prompts / prefix reuse / int8, peak RSS.
RERANK_THREADS=1 bench qwen3 --pairs 16 --passes 2 --json "$out/qwen3.json"
# Through the sidecar, W1 only: W2's 32 clients x 5 documents queue 160 pairs at once, about 4 minutes
# of this model here, past the bench clients' and the sidecar's 120 s deadlines.
bench load --model qwen3-0.6b --backend torch --threads 1 --schedulers batched --prefix-reuse on,off \
    --workloads W1 --w1-documents 16 --scale 0.1 --warm-up-clients 1 --ceiling-pairs 16 --max-seconds 150 \
    --json "$out/qwen3-load.json"
# W2's shape in int8 (about 2.5 pairs/s with reuse here): 16 of its 32 clients send one 5-document request
# each, 80 pairs at once, so that every request ends within the sidecar's 120 s deadline.
bench load --model qwen3-0.6b --backend torch --threads 1 --quantize int8 --schedulers batched \
    --prefix-reuse on,off --workloads W2 --scale 0.04 --warm-up-clients 1 --ceiling-pairs 0 --max-seconds 150 \
    --json "$out/qwen3-load-w2.json"
# Embeddings: the sidecar (default settings, fp32) against Infinity 0.0.78 and in-process sentence-transformers.
# Infinity's pins conflict with the project's, so it gets a venv of its own (torch first: the CPU wheel).
if [ ! -x .venv-infinity/bin/infinity_emb ]; then
    python3 -m venv .venv-infinity
    .venv-infinity/bin/python -m pip install --quiet "torch==2.13.0"
    .venv-infinity/bin/python -m pip install --quiet "infinity-emb[torch,server]==0.0.78"
fi
bench embed --infinity-python .venv-infinity/bin/python --json "$out/embed.json"
# The mixed load (E2 beside W1) held for 10 minutes: every response 200, the sidecar's RSS flat after minute 1.
bench embed --soak-s 600 --e1-requests 4 --e2-requests 64 --w1-requests 4 --encode-texts 64 --no-memory \
    --json "$out/embed-soak.json"
# The quality run scores through a live sidecar on the embedded default and in-process, side by side.
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RERANK_SIDECAR_PORT=$port .venv/bin/rerank-sidecar serve --log-level warning &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.5; done
bench quality --url "http://127.0.0.1:$port" --in-process --json "$out/quality.json"
# Each passage's int8 embedding against its fp32 one (the embedded default, every distinct DL20 passage).
bench int8-cosine --json "$out/int8-cosine.json"
bench report --results "$out" --out BENCHMARKS.md
