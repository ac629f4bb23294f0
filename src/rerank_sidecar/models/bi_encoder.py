"""Bi-encoder family (the embedded all-MiniLM-L6-v2, any sentence-transformers encoder): embeddings, and their cosine."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from ..config import BUILTIN_MODEL_ID, Settings
from .base import (
    Calibration,
    EmbeddingInfo,
    EmbeddingScorer,
    EncodedDocument,
    EncodedPair,
    FamilyEntry,
    LongDocs,
    ModelFiles,
    PassOutput,
    Runtime,
    Scorer,
    chunk_stride,
    describe,
    group_windows,
    pad_rows,
)
from .device import TorchRuntime
from .resolve import ResolvedModel

# Logistic map from cosine to P(relevant) of the embedded default only, fitted on TREC DL 2020 judgements
# (grade >= 2 relevant) by `rerank-sidecar calibrate`; rerun it to reproduce or refit these two numbers.
BUILTIN_CALIBRATION = Calibration(scale=7.2114, bias=-5.5667)
# Every other bi-encoder: sigmoid(cosine), fitted to nothing. It keeps the order, maps an orthogonal pair to
# 0.5 and spans [0.27, 0.73]; a threshold on it means something only after measuring it on the model.
UNFITTED_CALIBRATION = Calibration()

# Chunk-mode windows of a sentence (tokens, with [CLS] and [SEP]), each overlapping the next by half.
# Mean pooling dilutes a sentence in a long window: a 2,000-word document with one answer sentence in
# its middle, embedded default, relevance of the best window over the sentence's alone (0.45), with
# filler words / with TREC passages as filler: 128 tokens 0.08 / 0.04, 64: 0.11 / 0.07, 48: 0.54 /
# 0.20, 32: 0.25 / 0.12, 24: 0.24 / 0.18 at 1/8 overlap; at 1/2 overlap 32: 0.27 / 0.26 and 24:
# 0.61 / 0.55, the only size that kept half on both (measured on the 2-core EPYC with the document of
# tests/test_long_docs.py's needle test, at window sizes 24 to 256).
SENTENCE_WINDOW_TOKENS = 24


def sentence_max_length(model_dir: Path, fallback: int) -> int:
    """The sentence-transformers max_seq_length of a model directory, when it declares one."""
    config = model_dir / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("max_seq_length", fallback))
    return fallback


ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

# The pooling modes of sentence-transformers' Pooling module this family runs, by their config key.
POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_lasttoken": "lasttoken"}


@dataclass(frozen=True, slots=True)
class SentenceLayout:
    """What a sentence-transformers directory says about turning token states into a vector."""

    pooling: str
    """mean, cls or lasttoken."""
    dimensions: int
    """Size of the pooled vector (the Pooling module's word_embedding_dimension)."""
    normalized: bool
    """Whether modules.json ends in a Normalize module."""
    prompts: dict[str, str]
    """config_sentence_transformers.json's named prompts."""
    default_prompt_name: str | None
    """The prompt a request that names none gets; None: no prompt."""

    @classmethod
    def read(cls, model_dir: Path) -> SentenceLayout:
        """The layout of `model_dir`; ValueError naming the module or mode it holds that this family does not run."""
        modules = json.loads((model_dir / "modules.json").read_text())
        kinds = [module["type"].rsplit(".", 1)[-1] for module in modules]
        unknown = [kind for kind in kinds if kind not in ("Transformer", "Pooling", "Normalize")]
        if unknown or "Pooling" not in kinds:
            raise ValueError(
                f"{model_dir}/modules.json holds {', '.join(unknown) or 'no Pooling module'}; the sidecar runs "
                "Transformer, then Pooling, then optionally Normalize"
            )
        pooling_dir = next(module["path"] for module in modules if module["type"].endswith("Pooling"))
        pooling = json.loads((model_dir / pooling_dir / "config.json").read_text())
        modes = [mode for key, mode in POOLING_MODES.items() if pooling.get(key)]
        others = [key for key, on in pooling.items() if key.startswith("pooling_mode_") and on and key not in POOLING_MODES]
        if len(modes) != 1 or others or pooling.get("include_prompt", True) is False:
            raise ValueError(
                f"{model_dir}/{pooling_dir}/config.json asks for pooling {modes + others} "
                f"(include_prompt {pooling.get('include_prompt', True)}); the sidecar pools one of "
                f"{', '.join(POOLING_MODES.values())}, over the prompt too"
            )
        settings_file = model_dir / "config_sentence_transformers.json"
        st_config = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
        return cls(modes[0], int(pooling["word_embedding_dimension"]), "Normalize" in kinds, dict(st_config.get("prompts") or {}), st_config.get("default_prompt_name"))

    def pool(self, hidden: ArrayT, mask: ArrayT) -> ArrayT:
        """One unnormalized vector per row, from token states and a float mask of the same kind (numpy or torch);
        lasttoken expects left-padded rows (their last token is real)."""
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "lasttoken":
            return hidden[:, -1]
        return (hidden * mask[:, :, None]).sum(1) / mask.sum(1)[:, None].clip(min=1e-9)

    def prompt(self, name: str) -> str:
        """The text of the prompt `name`, or none when the model has no such prompt."""
        return self.prompts.get(name, "")


@dataclass(frozen=True, slots=True)
class QueryTokens:
    """A bi-encoder rerank pair's payload: the query, embedded once per batch for all pairs that share it."""

    query_ids: tuple[int, ...]
    """The query's tokens (after the model's query prompt), with the model's special tokens."""


BiEncoderPair = EncodedPair[QueryTokens]


class BiEncoderScorer(EmbeddingScorer):
    """Embeds texts as its sentence-transformers files say, on any runtime; a rerank pair's raw score is the cosine.

    One forward pass may hold rerank pairs (their payload names the query) and embedding texts
    (no payload) of any requests: each row is embedded once, and a pair's query once per pass.
    """

    def __init__(self, resolved: ResolvedModel, settings: Settings, runtime: Runtime) -> None:
        self.runtime = runtime
        self.layout = SentenceLayout.read(resolved.path)
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
        self.max_length = min(settings.max_length, sentence_max_length(resolved.path, settings.max_length))
        self.chunk_tokens = min(settings.chunk_tokens or SENTENCE_WINDOW_TOKENS, self.max_length)
        self.calibration = BUILTIN_CALIBRATION if resolved.model_id == BUILTIN_MODEL_ID else UNFITTED_CALIBRATION
        self.pad_side: Literal["right", "left"] = "left" if self.layout.pooling == "lasttoken" else "right"
        embedding = EmbeddingInfo(
            dimensions=self.layout.dimensions, normalized=self.layout.normalized, pooling=self.layout.pooling,
            prompts=self.layout.prompts, default_prompt_name=self.layout.default_prompt_name,
        )
        self.info = replace(describe(resolved, settings, runtime, self.max_length), embedding=embedding)

    def encode(
        self, query: str, documents: Sequence[str], instruction: str | None, long_docs: LongDocs, max_chunks: int
    ) -> list[EncodedDocument]:
        query_text = self.layout.prompt("query") + query
        query_ids = self.tokenizer(query_text, truncation=True, max_length=self.max_length)["input_ids"]
        query_tokens = QueryTokens(tuple(query_ids))
        if not documents:
            return []
        window = self.max_length if long_docs == "truncate" else self.chunk_tokens
        # Windows shorter than the model's overlap by half, so a sentence on a border is whole in one.
        stride = window // 2 if window < self.max_length else chunk_stride(window)
        if long_docs == "chunk":
            max_chunks = self.chunks_covering(max_chunks, window, stride)
        document_prompt = self.layout.prompt("document")
        encoded = self.tokenizer(
            [document_prompt + document for document in documents],
            truncation=True, max_length=window, return_overflowing_tokens=True, stride=stride,
        )
        windows = [EncodedPair(tuple(ids), query_tokens) for ids in encoded["input_ids"]]
        return group_windows(windows, encoded["overflow_to_sample_mapping"], len(documents), long_docs, max_chunks)

    def encode_texts(self, texts: Sequence[str], prompt: str) -> list[EncodedDocument]:
        encoded = self.tokenizer(
            [prompt + text for text in texts], truncation=True, max_length=self.max_length,
            return_overflowing_tokens=True, stride=0,
        )
        windows = [EncodedPair(tuple(ids)) for ids in encoded["input_ids"]]
        return group_windows(windows, encoded["overflow_to_sample_mapping"], len(texts), "truncate", 1)

    def chunks_covering(self, max_chunks: int, window: int, stride: int) -> int:
        """How many windows of `window` tokens reach as far into a document as `max_chunks` model-length ones:
        the chunk cap counts model-length windows, whatever the window size."""
        model_step = self.max_length - 2 - chunk_stride(self.max_length)
        return math.ceil(max_chunks * model_step / max(1, window - 2 - stride))

    def pooled(self, token_lists: Sequence[Sequence[int]]) -> np.ndarray:
        """One unnormalized float32 vector per row, pooled as the model's Pooling module does."""
        ids, mask = pad_rows(token_lists, self.tokenizer.pad_token_id or 0, self.pad_side)
        hidden = self.runtime.run({"input_ids": ids, "attention_mask": mask})
        if hidden.device.type == "cpu":
            # Pooled on this thread: torch's own worker threads pooling beside onnxruntime's took 16-24% more CPU
            # per pass than numpy here (MiniLM-L6 int8, DL20 passages, 2-core EPYC, issue #21).
            return np.ascontiguousarray(self.layout.pool(hidden.float().numpy(), mask.astype(np.float32)))
        device_mask = torch.from_numpy(mask).to(hidden.device, torch.float32)
        return self.layout.pool(hidden.float(), device_mask).cpu().numpy()

    @torch.inference_mode()
    def run_pass(self, pairs: Sequence[EncodedPair]) -> PassOutput:
        vectors = self.pooled([pair.input_ids for pair in pairs])
        scores = np.full(len(pairs), np.nan)
        reranked = [index for index, pair in enumerate(pairs) if pair.payload is not None]
        if reranked:
            # The batch's queries run in a pass of their own, padded to the longest query: as rows of the
            # documents' pass each was padded to the longest document, and that pass cost 28-33% more CPU
            # (embedded default, int8, 600 DL20 pairs in the engine's batches, 2-core EPYC, issue #21).
            queries = dict.fromkeys(pairs[index].payload.query_ids for index in reranked)
            query_row = {ids: row for row, ids in enumerate(queries)}
            query_unit = unit_rows(self.pooled(list(query_row)))
            rows = [query_row[pairs[index].payload.query_ids] for index in reranked]
            scores[reranked] = np.einsum("ij,ij->i", query_unit[rows], unit_rows(vectors[reranked]))
        return PassOutput(scores=scores, vectors=vectors)

    def score_batch(self, pairs: Sequence[BiEncoderPair]) -> np.ndarray:
        return self.run_pass(pairs).scores


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def is_bi_encoder(files: ModelFiles) -> bool:
    # A causal LM in sentence-transformers layout (e.g. Qwen3-Embedding) pools its last token, not the mean.
    return files.has("modules.json") and not any(arch.endswith("ForCausalLM") for arch in files.architectures)


def load_torch(resolved: ResolvedModel, settings: Settings) -> Scorer:
    return BiEncoderScorer(resolved, settings, TorchRuntime(AutoModel.from_pretrained, resolved, settings))


def load_onnx(resolved: ResolvedModel, settings: Settings) -> Scorer:
    from .onnx import OnnxSession  # onnxruntime: only when this runtime is picked

    return BiEncoderScorer(resolved, settings, OnnxSession(resolved, "feature-extraction", settings))


FAMILY = FamilyEntry(
    detects="`modules.json` (sentence-transformers layout), not a causal LM",
    detect=is_bi_encoder,
    loaders={"torch": load_torch, "onnx": load_onnx},
    payload=QueryTokens,
    tasks=frozenset({"rerank", "embed"}),
)
