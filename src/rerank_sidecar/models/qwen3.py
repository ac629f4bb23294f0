"""Qwen3-Reranker (causal LM): raw = logit("yes") - logit("no") at the last position of the official prompt.

Why this backend stays on torch (no ONNX export):
- The score needs two rows of the output head at one position. Stock ONNX exports of causal LMs emit the
  full-vocabulary logits for every position (about 150k floats per token), which is the memory and time this
  backend exists to avoid; a custom export would have to be rebuilt and re-verified for each Qwen3 size.
- The published checkpoints are 0.6B to 8B parameters. Their cost is large matrix products, which torch already
  sends to cuBLAS on a GPU and to oneDNN/MKL on the CPU; an extra runtime would add a second copy of the
  weights on disk (the 4B and 8B exports exceed ONNX's 2 GB protobuf limit and need external data) for no
  measured gain.

What the GPU path does:
- fp16 weights by default (RERANK_DTYPE overrides, e.g. bfloat16), loaded once with
  `attn_implementation="sdpa"`, so attention runs in PyTorch's fused scaled-dot-product kernels
  (flash / memory-efficient) instead of materialising the attention matrix.
- Left padding, so the last position of every row is the end of its prompt; the base model (no LM head) runs
  without a KV cache, only the last position's hidden state is kept, and it is multiplied by the two head rows
  of "yes" and "no" in float32. The full head (vocabulary x hidden) is never applied, and an untied head is
  freed after load.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..config import DEFAULT_QWEN3_INSTRUCTION, Settings
from .base import EncodedDocument, EncodedPair, LongDocs, Scorer, ScorerInfo, chunk_stride, pad_rows
from .device import configure_torch_threads, pick_device, pick_dtype
from .resolve import ResolvedModel

# The official prompt of the Qwen3-Reranker model card.
PROMPT_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
PROMPT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
ATTENTION = "sdpa"


def prompt_head(instruction: str, query: str) -> str:
    """The body of the prompt up to where the document starts."""
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: "


def window_starts(length: int, window: int, step: int, keep: int) -> list[int]:
    """Start offsets of windows over `length` tokens: at most `keep + 1`, so the caller can tell it cut some."""
    starts = [0]
    while starts[-1] + window < length and len(starts) <= keep:
        starts.append(starts[-1] + step)
    return starts


class Qwen3RerankerScorer(Scorer):
    """Scores `prefix + <Instruct>/<Query>/<Document> body + suffix`; relevance = sigmoid(logit_yes - logit_no)."""

    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        self.device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, self.device)
        configure_torch_threads(settings.threads)
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True, padding_side="left")
        causal_lm = AutoModelForCausalLM.from_pretrained(
            resolved.path, local_files_only=True, dtype=dtype, attn_implementation=ATTENTION
        )
        # Qwen3's head is a bias-free linear layer: its "yes" and "no" rows are all the scoring needs of it.
        head_weight = causal_lm.get_output_embeddings().weight
        self.yes_no_weight = head_weight[list(self._answer_token_ids(resolved))].detach().float().to(self.device)
        # Keep only the base model: the full head is never applied, and an untied one is freed with `causal_lm`.
        self.model = causal_lm.model.to(self.device).eval()
        self.max_length = min(settings.max_length, causal_lm.config.max_position_embeddings)
        self.prefix_ids = self.tokenizer.encode(PROMPT_PREFIX, add_special_tokens=False)
        self.suffix_ids = self.tokenizer.encode(PROMPT_SUFFIX, add_special_tokens=False)
        self.body_budget = self.max_length - len(self.prefix_ids) - len(self.suffix_ids)
        if self.body_budget < 1:
            raise ValueError(
                f"RERANK_MAX_LENGTH={settings.max_length} leaves no room for the query and document: the "
                f"Qwen3-Reranker prompt alone is {len(self.prefix_ids) + len(self.suffix_ids)} tokens"
            )
        self.default_instruction = settings.instruction or DEFAULT_QWEN3_INSTRUCTION
        self.info = ScorerInfo(
            model=resolved.model_id,
            revision=resolved.revision,
            family="qwen3",
            backend="torch",
            device=str(self.device),
            dtype=str(dtype).removeprefix("torch."),
            max_length=self.max_length,
            details={"attention": ATTENTION, "scored_positions": "last", "head_rows": "yes,no"},
        )

    def _answer_token_ids(self, resolved: ResolvedModel) -> tuple[int, int]:
        """Token ids of "yes" and "no"; a tokenizer without them cannot be a Qwen3-style reranker."""
        ids = self.tokenizer.convert_tokens_to_ids(["yes", "no"])
        if any(token_id is None or token_id == self.tokenizer.unk_token_id for token_id in ids):
            raise ValueError(f"{resolved.model_id}: the tokenizer has no single 'yes' and 'no' tokens")
        return ids[0], ids[1]

    def encode(
        self, query: str, documents: Sequence[str], instruction: str | None, long_docs: LongDocs, max_chunks: int
    ) -> list[EncodedDocument]:
        if not documents:
            return []
        head = prompt_head(instruction or self.default_instruction, query)
        # The body is tokenized whole, as the model card does, so the tokens at the head/document seam match it.
        encoded = self.tokenizer(
            [head + document for document in documents], add_special_tokens=False, return_offsets_mapping=True
        )
        keep = 1 if long_docs == "truncate" else max_chunks
        return [
            self._windows(ids, offsets, len(head), keep)
            for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
        ]

    def _windows(
        self, body_ids: list[int], offsets: list[tuple[int, int]], document_start: int, keep: int
    ) -> EncodedDocument:
        """One prompt per window of the document's tokens; the prefix and suffix always stay whole."""
        head_length = sum(1 for _, end in offsets if end <= document_start)
        room = self.body_budget - head_length
        if room < 1:
            # The query and instruction alone fill the budget: cut the body from the right, as the model card does.
            window = self.prefix_ids + body_ids[: self.body_budget] + self.suffix_ids
            return EncodedDocument((EncodedPair(tuple(window)),), truncated=len(body_ids) > self.body_budget)
        head_ids, document_ids = body_ids[:head_length], body_ids[head_length:]
        step = max(1, room - chunk_stride(room))
        starts = window_starts(len(document_ids), room, step, keep)
        windows = tuple(
            EncodedPair(tuple(self.prefix_ids + head_ids + document_ids[start : start + room] + self.suffix_ids))
            for start in starts[:keep]
        )
        return EncodedDocument(windows=windows, truncated=len(starts) > keep)

    @torch.inference_mode()
    def score_batch(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        ids, mask = pad_rows([pair.input_ids for pair in pairs], self.tokenizer.pad_token_id, side="left")
        hidden = self.model(
            input_ids=torch.from_numpy(ids).to(self.device),
            attention_mask=torch.from_numpy(mask).to(self.device),
            use_cache=False,
        ).last_hidden_state
        # Left padding puts every prompt's last token in the last column.
        logits = hidden[:, -1].float() @ self.yes_no_weight.T
        return (logits[:, 0] - logits[:, 1]).double().cpu().numpy()
