"""The JSON results of every bench command, one model each, and the comparisons drawn from them.

Each command writes its report with `output.write_json`; `bench report` reads them back here and
nowhere else.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

# The configuration name of the seed's design (support/onelock.py) in load results and ratios.
ONE_LOCK = "one-lock"


class BackendResult(BaseModel):
    """What one backend (or configuration) did on one model, in-process."""

    backend: str = Field(description="Configuration label (torch-fp32, onnx-fp32, onnx-int8).")
    model: str = Field(description="Which model: minilm-cross-encoder (speed) or the embedded bi-encoder (quality).")
    pairs: int = Field(description="Pairs scored.")
    mean_tokens: float = Field(description="Mean tokens per scored pair (document tokens for the bi-encoder).")
    seconds: float = Field(description="Wall time of one scoring pass over the pairs, tokenization included (median).")
    pairs_per_s: float = Field(description="pairs / seconds: the median pass.")
    passes_pairs_per_s: list[float] = Field(description="pairs/s of each timed pass, in the order they ran.")
    load_s: float = Field(description="Seconds to load the scorer (including an ONNX export on a cache miss).")
    details: dict[str, str] = Field(description="The scorer's ScorerInfo.details (ONNX file, cache hit, threads).")
    ndcg10: float | None = Field(None, description="Mean NDCG@10 over the scored topics (quality runs only).")


class BackendsReport(BaseModel):
    """`bench backends`: speed on the cross-encoder, quality (and speed) on the embedded model."""

    threads: int = Field(description="Intra-op threads every backend used.")
    speed: list[BackendResult] = Field(description="MiniLM-L6-shaped cross-encoder, same pairs for each backend.")
    quality: list[BackendResult] = Field(description="Embedded bi-encoder on TREC DL 2020 topics.")
    int8_over_torch: float = Field(description="onnx-int8 pairs/s divided by torch-fp32 pairs/s (cross-encoder).")


class PeakMemory(BaseModel):
    """One precision's process memory: the model loaded, then one batch scored."""

    precision: str = Field(description="fp32, bf16 or int8.")
    loaded_mib: float = Field(description="RSS once the model is loaded (MiB).")
    peak_mib: float = Field(description="Peak RSS of the process over load and one batch (MiB).")
    batch_pairs: int = Field(description="Pairs in the scored batch.")
    batch_tokens: int = Field(description="Tokens of the scored batch's prompts, before padding.")


class Qwen3Report(BaseModel):
    """`bench qwen3`: the three configurations' speed side by side, and peak RSS per precision."""

    model: str = Field(description="qwen3-0.6b (the stand-in in Qwen3-Reranker-0.6B's shape) or a model path.")
    threads: int = Field(description="Intra-op threads.")
    speed: list[BackendResult] = Field(description="fp32 full prompts, fp32 prefix reuse, int8 prefix reuse.")
    reuse_over_full: float = Field(description="fp32 prefix reuse pairs/s / fp32 full prompts pairs/s.")
    int8_reuse_over_full: float = Field(description="int8 prefix reuse pairs/s / fp32 full prompts pairs/s.")
    memory: list[PeakMemory] = Field(description="Peak RSS per precision of --memory-precisions, each in a fresh "
                                                 "process.")


class LoadResult(BaseModel):
    """Figures of one workload against one configuration."""

    configuration: str = Field(description="Scheduler (and backend) the sidecar ran.")
    workload: str = Field(description="W1, W2, W3 or a sweep point.")
    concurrency: int = Field(description="Concurrent clients of small requests.")
    documents: int = Field(description="Documents per small request.")
    requests: int = Field(description="Small requests answered 200.")
    rejected: int = Field(description="Small requests answered 503.")
    pairs: int = Field(description="Pairs scored, big requests included.")
    seconds: float = Field(description="Wall time of the workload.")
    pairs_per_s: float = Field(description="Pairs scored per second, all requests.")
    requests_per_s: float = Field(description="Small requests answered per second.")
    p50_ms: float = Field(description="Median latency of small requests.")
    p95_ms: float = Field(description="95th percentile latency of small requests.")
    p99_ms: float = Field(description="99th percentile latency of small requests.")
    big_requests: int = Field(0, description="W3: big requests completed.")


class LoadReport(BaseModel):
    """Everything one `bench load` run measured."""

    model: str = Field(description="Model the sidecars served.")
    backend: str = Field(description="RERANK_BACKEND of the sidecars.")
    quantize: str = Field("auto", description="RERANK_QUANTIZE of the sidecars.")
    results: list[LoadResult] = Field(description="One row per configuration and workload.")
    ceiling_pairs_per_s: float | None = Field(None, description="In-process pairs/s of the best batch layout.")
    ceiling_layout: str | None = Field(
        None, description="The ceiling's batches: 'batch N' (fixed size) or 'planned' (the sidecar's planner), length-sorted."
    )
    ray_replica_cpus: float | None = Field(None, description="CPUs and inference threads per Ray replica, if Ray.")

    def comparisons(self) -> list[str]:
        """The ratios a run exists for: batched/serial, batched/ceiling, and N Ray replicas / one replica."""
        by_key = {(r.configuration, r.workload): r for r in self.results}
        lines = []
        for workload in dict.fromkeys(r.workload for r in self.results):
            auto, int8 = by_key.get(("batched auto", workload)), by_key.get(("batched int8", workload))
            if auto and int8:
                lines.append(f"{workload}: throughput default (auto) / int8 {auto.pairs_per_s / int8.pairs_per_s:.2f}x")
            batched, serial = by_key.get(("batched", workload)), by_key.get(("serial", workload))
            if batched and serial:
                lines.append(f"{workload}: throughput batched/serial {batched.pairs_per_s / serial.pairs_per_s:.2f}x, "
                             f"p99 batched/serial {batched.p99_ms / serial.p99_ms:.2f}x")
            one_lock = by_key.get((ONE_LOCK, workload))
            if batched and one_lock:
                lines.append(f"{workload}: throughput batched/one-lock {batched.pairs_per_s / one_lock.pairs_per_s:.2f}x, "
                             f"p99 batched/one-lock {batched.p99_ms / one_lock.p99_ms:.2f}x")
            if batched and workload == "W2":
                little = batched.concurrency * batched.documents / batched.pairs_per_s * 1000
                lines.append(f"W2: p99 / Little's-law mean ({batched.concurrency * batched.documents} pairs in flight / "
                             f"pairs/s = {little:.0f} ms) {batched.p99_ms / little:.2f}x")
            if batched and self.ceiling_pairs_per_s:
                lines.append(f"{workload}: batched / in-process ceiling {batched.pairs_per_s / self.ceiling_pairs_per_s:.2f}x")
        for r in self.results:
            if r.configuration.endswith(" reuse-on"):
                off = by_key.get((r.configuration.removesuffix("on") + "off", r.workload))
                if off:
                    lines.append(f"{r.workload}: throughput {r.configuration} / reuse-off "
                                 f"{r.pairs_per_s / off.pairs_per_s:.2f}x, p99 {r.p99_ms / off.p99_ms:.2f}x")
                if self.ceiling_pairs_per_s:
                    lines.append(f"{r.workload}: {r.configuration} / in-process ceiling "
                                 f"{r.pairs_per_s / self.ceiling_pairs_per_s:.2f}x")
            scheduler, _, replicas = r.configuration.partition(" ray x")
            one_replica = by_key.get((f"{scheduler} ray x1", r.workload))
            if replicas not in ("", "1") and one_replica:
                lines.append(f"{r.workload}: throughput {r.configuration} / ray x1 "
                             f"{r.pairs_per_s / one_replica.pairs_per_s:.2f}x")
        if self.ceiling_pairs_per_s:
            lines.append(f"in-process ceiling: {self.ceiling_pairs_per_s:.1f} pairs/s ({self.ceiling_layout})")
        return lines


class ModelsLoadReport(BaseModel):
    """What one `bench models` run measured."""

    models: list[str] = Field(description="The two models.")
    backend: str = Field(description="RERANK_BACKEND of the sidecars.")
    together: list[LoadResult] = Field(description="One row per model: its half of W2, both halves at once.")
    alone: list[LoadResult] = Field(description="One row per model: all of W2 on a sidecar serving it alone.")
    together_pairs_per_s: float = Field(description="Both halves' pairs over the longer half's wall time.")

    def comparisons(self) -> list[str]:
        """Total pairs/s of both models at once against each model alone and their mean."""
        alone = {result.configuration.removeprefix("alone "): result.pairs_per_s for result in self.alone}
        mean = sum(alone.values()) / len(alone)
        failed = sum(result.rejected for result in [*self.together, *self.alone])
        lines = [f"two models at once: {self.together_pairs_per_s:.1f} pairs/s in all; "
                 f"{self.together_pairs_per_s / mean:.2f}x the mean of each alone ({mean:.1f})"]
        lines += [f"  / {model} alone ({pairs:.1f}): {self.together_pairs_per_s / pairs:.2f}x"
                  for model, pairs in alone.items()]
        lines.append(f"requests not answered 200: {failed}")
        return lines


class MemoryRow(BaseModel):
    """Memory of N consumers, one way or the other."""

    consumers: int = Field(description="Consumer processes.")
    layout: str = Field(description="sidecar (one model, N thin clients) or in-process (N model copies).")
    rss_mib: float = Field(description="Sum of resident set sizes (counts shared pages once per process).")
    pss_mib: float = Field(description="Sum of proportional set sizes (shared pages split between processes).")


class ModelsMemoryRow(BaseModel):
    """Resident memory of sidecars serving two models, one way or another."""

    layout: str = Field(description="What runs: sidecars, which models, loaded or unloaded.")
    processes: int = Field(description="Sidecar processes measured.")
    rss_mib: float = Field(description="Sum of their resident set sizes.")


class MemoryReport(BaseModel):
    """What one `bench memory` run measured."""

    model: str = Field(description="Model measured.")
    rows: list[MemoryRow] = Field(description="One row per layout and consumer count.")
    models: list[ModelsMemoryRow] = Field(
        default_factory=list, description="--models: one sidecar serving two models against two sidecars, and unloaded."
    )


class QualityRow(BaseModel):
    """Ranking quality of one way of ordering the candidates."""

    ranker: str = Field(description="positional (first-stage order), sidecar, or in-process.")
    ndcg10: float = Field(description="Mean NDCG@10 (trec_eval convention).")
    mrr10: float = Field(description="Mean MRR@10, grade >= 2 relevant.")
    recall10: float = Field(description="Mean Recall@10, grade >= 2 relevant.")


class QualityReport(BaseModel):
    """What one `bench quality` run measured."""

    data: str = Field(description="Benchmark directory.")
    topics: int = Field(description="Judged queries evaluated.")
    candidates: int = Field(description="Candidates per query (at most).")
    model: str | None = Field(None, description="Model the sidecar served.")
    rows: list[QualityRow] = Field(description="One row per ranker.")
    max_score_difference: float | None = Field(
        None, description="Largest |sidecar - in-process| raw score over all pairs."
    )


class SettingsComparison(BaseModel):
    """`bench quality --a/--b`: two settings of one model scored on the same benchmark, one after the other."""

    data: str = Field(description="Benchmark directory.")
    topics: int = Field(description="Judged queries evaluated.")
    candidates: int = Field(description="Candidates per query (at most).")
    a: list[str] = Field(description="Setting A: the RERANK_* assignments over the environment's.")
    b: list[str] = Field(description="Setting B, likewise.")
    rows: list[QualityRow] = Field(description="positional, A and B.")
    max_raw_difference: float = Field(description="Largest |A - B| raw score over all pairs.")
    max_relevance_difference: float = Field(description="Largest |A - B| relevance over all pairs.")


# The systems of `bench embed`, as its results name them.
SIDECAR_DEFAULT, SIDECAR_FP32, INFINITY, IN_PROCESS_ENCODE = (
    "sidecar default", "sidecar fp32", "infinity", "sentence-transformers encode")
# The targets of issue 21 that `bench embed` is held to (printed beside its figures).
E1_OVER_INFINITY, E2_OVER_INFINITY, E2_P99_OVER_LITTLE, RERANK_MIXED_OVER_ALONE = 3.0, 2.0, 1.4, 0.8


class EmbedLoadResult(BaseModel):
    """Figures of one embedding workload against one system."""

    system: str = Field(description="sidecar default, sidecar fp32, infinity or sentence-transformers encode.")
    workload: str = Field(description="E1, E2, E2 mixed (beside W1 reranking), or encode (in-process).")
    concurrency: int = Field(description="Clients sending requests back to back (1 in-process).")
    texts_per_request: int = Field(description="Texts per request (per encode batch in-process).")
    requests: int = Field(description="Requests answered 200 with every vector.")
    failed: int = Field(description="Requests answered anything else.")
    texts: int = Field(description="Texts embedded, in the answered requests.")
    seconds: float = Field(description="Wall time of the workload.")
    texts_per_s: float = Field(description="Texts embedded per second.")
    p50_ms: float = Field(description="Median latency of a request (NaN in-process).")
    p95_ms: float = Field(description="95th percentile latency.")
    p99_ms: float = Field(description="99th percentile latency.")

    def little_ms(self) -> float:
        """Little's law's mean latency of a closed loop at this throughput: clients / requests per second."""
        return self.concurrency * self.texts_per_request / self.texts_per_s * 1000 if self.texts_per_s else float("nan")


class RssSample(BaseModel):
    """The sidecar's resident memory at one moment of the soak."""

    at_s: float = Field(description="Seconds since the soak began.")
    rss_mib: float = Field(description="Resident set size (MiB).")


class SoakResult(BaseModel):
    """The mixed load (E2 beside W1) held for a while against one sidecar."""

    seconds: float = Field(description="How long the load ran.")
    responses: int = Field(description="Requests answered, every kind.")
    not_200: int = Field(description="Requests answered anything but a 200 (or a 200 missing vectors).")
    samples: list[RssSample] = Field(description="RSS every few seconds.")
    settle_s: float = Field(description="Samples before this many seconds are left out of the flatness figure.")

    def rss_max_over_min(self) -> float:
        """Largest over smallest RSS after `settle_s` (1.0 is flat; the target is within 1.05)."""
        settled = [sample.rss_mib for sample in self.samples if sample.at_s >= self.settle_s]
        return max(settled) / min(settled) if settled else float("nan")


class CoresUsed(BaseModel):
    """CPU the processes of one workload used, in cores (CPU seconds over wall seconds)."""

    workload: str = Field(description="What ran: reranking alone, or beside E2.")
    sidecar: float = Field(description="The sidecar process, every thread.")
    load_generator: float = Field(description="The benchmark's own process: the clients of every workload.")


class EmbedReport(BaseModel):
    """What one `bench embed` run measured."""

    model: str = Field(description="The embedding model (the embedded default).")
    threads: int = Field(description="Inference threads of the sidecars and of the in-process encode.")
    results: list[EmbedLoadResult] = Field(description="One row per system and workload.")
    rerank_alone: LoadResult | None = Field(None, description="W1 reranking on the default sidecar alone.")
    rerank_mixed: LoadResult | None = Field(None, description="W1 reranking on the same sidecar beside E2.")
    cores: list[CoresUsed] = Field(default_factory=list, description="CPU of the sidecar and of the clients while "
                                   "reranking ran alone and beside E2: where the cores went.")
    memory: list[ModelsMemoryRow] = Field(default_factory=list, description="One sidecar serving the reranker stand-in "
                                          "and the embedding model, against two sidecars, one model each.")
    soak: SoakResult | None = Field(None, description="--soak-s: the mixed load held, RSS sampled.")
    skipped: list[str] = Field(default_factory=list, description="Systems or parts not run, each with its reason.")

    def find(self, system: str, workload: str) -> EmbedLoadResult | None:
        """The row of `system` on `workload`, if it ran."""
        return next((r for r in self.results if r.system == system and r.workload == workload), None)

    def comparisons(self) -> list[str]:
        """Each figure of issue 21 beside its target; a target whose figures did not run is said so."""
        lines = []
        infinity_ratios = (("E1", E1_OVER_INFINITY), ("E2", E2_OVER_INFINITY))
        for workload, target in infinity_ratios:
            ours, theirs = self.find(SIDECAR_DEFAULT, workload), self.find(INFINITY, workload)
            if ours and theirs and theirs.texts_per_s:
                ratio = ours.texts_per_s / theirs.texts_per_s
                lines.append(f"{workload}: sidecar default / Infinity {ratio:.2f}x texts/s (target >= {target}x: "
                             f"{_verdict(ratio >= target)})")
        for system in (SIDECAR_DEFAULT, INFINITY):
            e2 = self.find(system, "E2")
            if e2 and e2.texts_per_s:
                ratio = e2.p99_ms / e2.little_ms()
                target = f" (target <= {E2_P99_OVER_LITTLE}x: {_verdict(ratio <= E2_P99_OVER_LITTLE)})"
                lines.append(f"E2 {system}: p99 / Little's-law mean ({e2.little_ms():.0f} ms) {ratio:.2f}x"
                             f"{target if system == SIDECAR_DEFAULT else ''}")
        encode, default_e1 = self.find(IN_PROCESS_ENCODE, "encode"), self.find(SIDECAR_DEFAULT, "E1")
        if encode and default_e1 and encode.texts_per_s:
            lines.append(f"E1: sidecar default / in-process encode {default_e1.texts_per_s / encode.texts_per_s:.2f}x")
        if self.rerank_alone and self.rerank_mixed and self.rerank_alone.pairs_per_s:
            ratio = self.rerank_mixed.pairs_per_s / self.rerank_alone.pairs_per_s
            lines.append(f"W1 reranking beside E2 / alone {ratio:.2f}x pairs/s (target >= {RERANK_MIXED_OVER_ALONE}x: "
                         f"{_verdict(ratio >= RERANK_MIXED_OVER_ALONE)})")
        rss = {row.layout: row.rss_mib for row in self.memory}
        if len(rss) == 2:
            one, two = rss.values()
            lines.append(f"memory: one sidecar with both models {one:.0f} MiB, two sidecars {two:.0f} MiB "
                         f"({one / two:.2f}x)")
        if self.soak:
            flat = self.soak.rss_max_over_min()
            lines.append(f"soak {self.soak.seconds:.0f} s: {self.soak.responses} responses, {self.soak.not_200} not 200; "
                         f"RSS max / min after {self.soak.settle_s:.0f} s {flat:.3f} (target <= 1.05: "
                         f"{_verdict(self.soak.not_200 == 0 and flat <= 1.05)})")
        return lines + [f"not run: {reason}" for reason in self.skipped]


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


class Int8CosineReport(BaseModel):
    """`bench int8-cosine`: each passage's int8 embedding against its fp32 one, from the same model."""

    data: str = Field(description="Benchmark directory the passages come from.")
    model: str = Field(description="The model embedded.")
    backend: str = Field(description="RERANK_BACKEND of both runs (environment: as configured).")
    passages: int = Field(description="Distinct passages embedded.")
    min_cosine: float = Field(description="Smallest cosine between a passage's int8 and fp32 vectors.")
    mean_cosine: float = Field(description="Mean of those cosines.")
    p01_cosine: float = Field(description="Their 1st percentile.")
    worst_passage: str = Field(description="The passage with the smallest cosine.")
