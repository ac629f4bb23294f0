"""Sequence-classification cross-encoders (ms-marco-MiniLM, bge-reranker): raw = the one logit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig

from ..config import Settings
from .base import EncodedDocument, EncodedPair, LongDocs, Scorer, ScorerInfo, chunk_stride, group_windows, pad_rows
from .device import configure_torch_threads, pick_device, pick_dtype
from .resolve import ResolvedModel


class CrossEncoderScorer(Scorer):
    """Scores the joined pair `[CLS] query [SEP] document [SEP]`; relevance = sigmoid(logit)."""

    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        self.device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, self.device)
        configure_torch_threads(settings.threads)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            resolved.path, local_files_only=True, dtype=dtype
        )
        self.model.to(self.device).eval()
        self.setup_tokenization(resolved, settings, self.model.config)
        self.info = ScorerInfo(
            model=resolved.model_id,
            revision=resolved.revision,
            family="cross-encoder",
            backend="torch",
            device=str(self.device),
            dtype=str(dtype).removeprefix("torch."),
            max_length=self.max_length,
            labels=self.labels,
        )

    def setup_tokenization(self, resolved: ResolvedModel, settings: Settings, config: PretrainedConfig) -> None:
        """The one-label check, tokenizer and window limits: what every backend of this family shares."""
        if config.num_labels != 1:
            raise ValueError(f"{resolved.model_id} has {config.num_labels} labels; a reranker cross-encoder has one")
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
        self.max_length = min(
            settings.max_length,
            self.tokenizer.model_max_length,
            getattr(config, "max_position_embeddings", settings.max_length),
        )
        self.labels = tuple(config.id2label[index] for index in sorted(config.id2label))
        self.chunk_tokens = min(settings.chunk_tokens or self.max_length, self.max_length)
        # A query may fill at most half the (chunk) window, so every document keeps room to be scored.
        self.max_query_tokens = self.chunk_tokens // 2

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
            EncodedPair(input_ids=tuple(ids), token_type_ids=tuple(types) if types is not None else None)
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

    def pad(self, pairs: Sequence[EncodedPair]) -> dict[str, np.ndarray]:
        """One right-padded batch: input ids, attention mask and, where the model has them, token type ids."""
        ids, mask = pad_rows([pair.input_ids for pair in pairs], self.tokenizer.pad_token_id or 0)
        batch = {"input_ids": ids, "attention_mask": mask}
        if pairs[0].token_type_ids is not None:
            types = [pair.token_type_ids or () for pair in pairs]
            batch["token_type_ids"] = pad_rows(types, self.tokenizer.pad_token_type_id)[0]
        return batch

    @torch.inference_mode()
    def score_batch(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        batch = {name: torch.from_numpy(array).to(self.device) for name, array in self.pad(pairs).items()}
        return self.model(**batch).logits[:, 0].double().cpu().numpy()
