"""Bi-encoder family (the embedded all-MiniLM-L6-v2, other mean-pooling sentence-transformers): cosine of embeddings."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from ..config import BUILTIN_MODEL_ID, Settings
from .base import (
    Calibration,
    EncodedDocument,
    EncodedPair,
    FamilyEntry,
    LongDocs,
    ModelFiles,
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


def mean_pooled(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the unpadded token states, L2-normalized: sentence-transformers' pooling for this model."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


@dataclass(frozen=True, slots=True)
class QueryTokens:
    """A bi-encoder pair's payload: the query, embedded once per batch for all pairs that share it."""

    query_ids: tuple[int, ...]
    """The query's tokens, with the model's special tokens."""


BiEncoderPair = EncodedPair[QueryTokens]


class BiEncoderScorer(Scorer):
    """Embeds query and documents separately on any runtime; raw score = cosine similarity."""

    def __init__(self, resolved: ResolvedModel, settings: Settings, runtime: Runtime) -> None:
        self.runtime = runtime
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
        self.max_length = min(settings.max_length, sentence_max_length(resolved.path, settings.max_length))
        self.chunk_tokens = min(settings.chunk_tokens or SENTENCE_WINDOW_TOKENS, self.max_length)
        self.calibration = BUILTIN_CALIBRATION if resolved.model_id == BUILTIN_MODEL_ID else UNFITTED_CALIBRATION
        self.info = describe(resolved, settings, runtime, self.max_length)

    def encode(
        self, query: str, documents: Sequence[str], instruction: str | None, long_docs: LongDocs, max_chunks: int
    ) -> list[EncodedDocument]:
        query_ids = self.tokenizer(query, truncation=True, max_length=self.max_length)["input_ids"]
        query_tokens = QueryTokens(tuple(query_ids))
        if not documents:
            return []
        window = self.max_length if long_docs == "truncate" else self.chunk_tokens
        # Windows shorter than the model's overlap by half, so a sentence on a border is whole in one.
        stride = window // 2 if window < self.max_length else chunk_stride(window)
        if long_docs == "chunk":
            max_chunks = self.chunks_covering(max_chunks, window, stride)
        encoded = self.tokenizer(
            list(documents), truncation=True, max_length=window, return_overflowing_tokens=True, stride=stride
        )
        windows = [EncodedPair(tuple(ids), query_tokens) for ids in encoded["input_ids"]]
        return group_windows(windows, encoded["overflow_to_sample_mapping"], len(documents), long_docs, max_chunks)

    def chunks_covering(self, max_chunks: int, window: int, stride: int) -> int:
        """How many windows of `window` tokens reach as far into a document as `max_chunks` model-length ones:
        the chunk cap counts model-length windows, whatever the window size."""
        model_step = self.max_length - 2 - chunk_stride(self.max_length)
        return math.ceil(max_chunks * model_step / max(1, window - 2 - stride))

    def embed(self, token_lists: Sequence[Sequence[int]]) -> torch.Tensor:
        """Mean-pooled, L2-normalized embeddings, as sentence-transformers computes them for this model."""
        ids, mask = pad_rows(token_lists, self.tokenizer.pad_token_id or 0)
        hidden = self.runtime.run({"input_ids": ids, "attention_mask": mask})
        return mean_pooled(hidden, torch.from_numpy(mask).to(hidden.device))

    @torch.inference_mode()
    def score_batch(self, pairs: Sequence[BiEncoderPair]) -> np.ndarray:
        queries = list(dict.fromkeys(pair.payload.query_ids for pair in pairs))
        query_row = {ids: row for row, ids in enumerate(queries)}
        # Queries and documents go through one forward pass; queries are few and short.
        embeddings = self.embed(queries + [pair.input_ids for pair in pairs])
        query_emb, doc_emb = embeddings[: len(queries)], embeddings[len(queries) :]
        rows = torch.tensor([query_row[pair.payload.query_ids] for pair in pairs], device=doc_emb.device)
        cosine = (query_emb[rows] * doc_emb).sum(dim=-1)
        return cosine.double().cpu().numpy()


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
)
