"""Sequence-classification cross-encoders (ms-marco-MiniLM, bge-reranker): raw = the one logit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from ..config import Settings
from .base import (
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


@dataclass(frozen=True, slots=True)
class SegmentIds:
    """A cross-encoder pair's payload, where the model takes segment ids (BERT-style models)."""

    token_type_ids: tuple[int, ...]
    """0 for the query's tokens, 1 for the document's, as the tokenizer joined them."""


CrossEncoderPair = EncodedPair[SegmentIds]


class CrossEncoderScorer(Scorer):
    """Scores the joined pair `[CLS] query [SEP] document [SEP]` on any runtime; relevance = sigmoid(logit)."""

    def __init__(self, resolved: ResolvedModel, settings: Settings, runtime: Runtime) -> None:
        config = AutoConfig.from_pretrained(resolved.path, local_files_only=True)
        if config.num_labels != 1:
            raise ValueError(f"{resolved.model_id} has {config.num_labels} labels; a reranker cross-encoder has one")
        self.runtime = runtime
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
        self.max_length = min(
            settings.max_length,
            self.tokenizer.model_max_length,
            getattr(config, "max_position_embeddings", settings.max_length),
        )
        self.chunk_tokens = min(settings.chunk_tokens or self.max_length, self.max_length)
        # A query may fill at most half the (chunk) window, so every document keeps room to be scored.
        self.max_query_tokens = self.chunk_tokens // 2
        labels = tuple(config.id2label[index] for index in sorted(config.id2label))
        self.info = describe(resolved, settings, runtime, self.max_length, labels)

    def encode(
        self, query: str, documents: Sequence[str], instruction: str | None, long_docs: LongDocs, max_chunks: int
    ) -> list[EncodedDocument]:
        if not documents:
            return []
        window = self.max_length if long_docs == "truncate" else self.chunk_tokens
        encoded = self.tokenizer(
            [self.fit_query(query)] * len(documents),
            list(documents),
            truncation="only_second",
            max_length=window,
            return_overflowing_tokens=True,
            stride=chunk_stride(window // 2),
        )
        type_ids = encoded.get("token_type_ids") or [None] * len(encoded["input_ids"])
        windows = [
            EncodedPair(tuple(ids), SegmentIds(tuple(types)) if types is not None else None)
            for ids, types in zip(encoded["input_ids"], type_ids, strict=True)
        ]
        return group_windows(windows, encoded["overflow_to_sample_mapping"], len(documents), long_docs, max_chunks)

    def fit_query(self, query: str) -> str:
        """The query cut to `max_query_tokens` at a token boundary; tokenizers refuse pairs whose query overflows."""
        encoded = self.tokenizer(query, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
        if len(offsets) <= self.max_query_tokens:
            return query
        return query[: offsets[self.max_query_tokens - 1][1]]

    def pad(self, pairs: Sequence[CrossEncoderPair]) -> dict[str, np.ndarray]:
        """One right-padded batch: input ids, attention mask and, where the model has them, token type ids."""
        ids, mask = pad_rows([pair.input_ids for pair in pairs], self.tokenizer.pad_token_id or 0)
        batch = {"input_ids": ids, "attention_mask": mask}
        if pairs[0].payload is not None:
            types = [pair.payload.token_type_ids for pair in pairs]
            batch["token_type_ids"] = pad_rows(types, self.tokenizer.pad_token_type_id)[0]
        return batch

    def score_batch(self, pairs: Sequence[CrossEncoderPair]) -> np.ndarray:
        return self.runtime.run(self.pad(pairs))[:, 0].double().cpu().numpy()


def is_cross_encoder(files: ModelFiles) -> bool:
    return any(arch.endswith("ForSequenceClassification") for arch in files.architectures)


def load_torch(resolved: ResolvedModel, settings: Settings) -> Scorer:
    return CrossEncoderScorer(resolved, settings, TorchRuntime(AutoModelForSequenceClassification.from_pretrained,
                                                               resolved, settings))


def load_onnx(resolved: ResolvedModel, settings: Settings) -> Scorer:
    from .onnx import OnnxSession  # onnxruntime: only when this runtime is picked

    return CrossEncoderScorer(resolved, settings, OnnxSession(resolved, "sequence-classification", settings))


FAMILY = FamilyEntry(
    detects="`*ForSequenceClassification` with one label",
    detect=is_cross_encoder,
    loaders={"torch": load_torch, "onnx": load_onnx},
    payload=SegmentIds,
)
