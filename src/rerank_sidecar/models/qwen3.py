"""Qwen3-Reranker (causal LM): raw = logit("yes") - logit("no") at the last position of the official prompt.

Why this backend stays on torch (no ONNX export):
- The score needs two rows of the output head at one position. Stock ONNX exports of causal LMs emit the
  full-vocabulary logits for every position (about 150k floats per token), which is the memory and time this
  backend exists to avoid; a custom export would have to be rebuilt and re-verified for each Qwen3 size.
- The published checkpoints are 0.6B to 8B parameters. Their cost is large matrix products, which torch already
  sends to cuBLAS on a GPU and to oneDNN/MKL on the CPU; an extra runtime would add a second copy of the
  weights on disk (the 4B and 8B exports exceed ONNX's 2 GB protobuf limit and need external data) for no
  measured gain.

What runs:
- On a GPU, fp16 weights by default (RERANK_DTYPE overrides, e.g. bfloat16); on the CPU, fp32. The model is
  loaded once with `attn_implementation="sdpa"`: attention runs in torch's scaled_dot_product_attention.
- Which SDPA kernel: every pass here hands SDPA an explicit mask (padding, and with prefix reuse a 4D boolean
  one), so transformers repeats the key/value heads to the query heads (`repeat_kv`, a copy) and torch picks
  among the kernels that take a mask. On the CPU that is torch's own flash kernel: torch 2.13 checks only the
  mask's shape there (`torch._fused_sdp_choice` answers FLASH_ATTENTION for a boolean mask, fp32 and bf16).
  On CUDA the flash kernel refuses any mask, so the memory-efficient kernel (or cuDNN's, where torch ranks it
  first) runs; read from torch's sdp_utils.cpp, not run here (no GPU was lent).
- Left padding, so the last position of every row is the end of its prompt; the base model (no LM head) runs
  without a KV cache, only the last position's hidden state is kept, and it is multiplied by the two head rows
  of "yes" and "no" in float32. The full head (vocabulary x hidden) is never applied, and an untied head is
  freed after load.

Prefix reuse (RERANK_QWEN3_PREFIX_REUSE, on by default):
- Every window of a request starts with the same tokens: the system prompt, the instruction and the query, up
  to the first token where its windows differ (the tokenizer may merge the space after `<Document>:` into a
  document's first token, so the seam is found on the tokens, never assumed). `encode` hands each window a
  reference to that `SharedPrefix`; `score_batch` runs a prefix once (keys and values of every layer), keeps it
  on the prefix object for the request's later batches, and runs each window's own tokens against it.
- The system prompt's keys and values are the same for every request: computed once at load, and broadcast
  (a view) under each request's prefix pass; a request's prefix keeps the pass's cache row as it is.
- Rows of one batch may belong to different requests: their prefixes are padded to the longest and masked
  (a 4D boolean mask: the row's own prefix, then its own tokens causally), and positions continue after the
  row's prefix, so each row computes what its full prompt would.
- Copies: a batch of one request broadcasts its prefix to every row (a view); several prefixes are padded
  and gathered, one copy per row. Either way the pass's cache update writes each row's prefix and own keys
  into one tensor, and `repeat_kv` copies that again per head group: SDPA takes one key tensor per row.
  Measured (0.6B shape, fp32, 2-core EPYC shared with other jobs): building and extending the cache of 16
  rows after a 122-token prefix took 86 ms against 340 ms when each row's prefix was copied on the way in
  (best of 5); whole batches of 4 pairs did not tell the two apart (median 25.4 vs 26.5 s, best 18.5 vs
  15.9 s: on the CPU the copies are about 1% of a batch, under the machine's noise).
- The planner charges a prefix's pass to the batch that runs it (`SharedPrefix.pass_tokens`), later batches
  0.05 of a token per prefix token (`PREFIX_TOKEN_WEIGHT`).

CPU int8 (RERANK_QUANTIZE=int8 on the CPU): every linear layer with int8 weights and activations quantized
one token at a time (torch_int8), so a pair scores the same in any batch; prefix reuse included; the two head
rows stay in float32.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from ..config import DEFAULT_QWEN3_INSTRUCTION, Settings
from .base import (
    EncodedDocument,
    EncodedPair,
    FamilyEntry,
    LongDocs,
    ModelFiles,
    Scorer,
    ScorerInfo,
    SharedPrefix,
    chunk_stride,
    pad_rows,
)
from .device import configure_torch_threads, pick_device, pick_dtype
from .resolve import ResolvedModel
from .torch_int8 import quantize_linear_layers

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


@dataclass(frozen=True, slots=True)
class PrefixCache:
    """Keys and values of every layer for one prefix, as a batch of one row."""

    keys: tuple[torch.Tensor, ...]
    """Per layer: (1, key/value heads, prefix tokens, head dim), rotary positions 0.. applied."""
    values: tuple[torch.Tensor, ...]
    """Per layer, shaped like `keys`."""

    @property
    def length(self) -> int:
        """Tokens of the prefix."""
        return self.keys[0].shape[2]


class PrefixLayer(DynamicLayer):
    """One layer's cache that starts out holding a batch's prefix keys and values as given, views included.

    `DynamicCache(ddp_cache_data=...)` copies what it is given on entry; here the forward pass's one update
    writes each row's prefix and own keys into one tensor (`torch.cat`), the only copy SDPA needs.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values = keys, values


def shared_prefix_length(windows: Sequence[Sequence[int]]) -> int:
    """Tokens every window starts with, leaving each window at least one token of its own (the scored one)."""
    shortest = min(len(window) for window in windows)
    first = windows[0]
    for position in range(shortest - 1):
        token = first[position]
        if any(window[position] != token for window in windows):
            return position
    return shortest - 1


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
        if settings.quantize == "int8":
            self.model = quantize_linear_layers(self.model)
            del causal_lm, head_weight
            gc.collect()  # the checkpoint's memory map goes with the last cycle that referenced its fp32 weights
        self.max_length = min(settings.max_length, self.model.config.max_position_embeddings)
        self.prefix_ids = self.tokenizer.encode(PROMPT_PREFIX, add_special_tokens=False)
        self.suffix_ids = self.tokenizer.encode(PROMPT_SUFFIX, add_special_tokens=False)
        self.body_budget = self.max_length - len(self.prefix_ids) - len(self.suffix_ids)
        if self.body_budget < 1:
            raise ValueError(
                f"RERANK_MAX_LENGTH={settings.max_length} leaves no room for the query and document: the "
                f"Qwen3-Reranker prompt alone is {len(self.prefix_ids) + len(self.suffix_ids)} tokens"
            )
        self.default_instruction = settings.instruction or DEFAULT_QWEN3_INSTRUCTION
        self.prefix_reuse = settings.qwen3_prefix_reuse
        # The system prompt opens every prompt: its keys and values are computed once, here.
        with torch.inference_mode():
            self.system_cache = self._run_prefixes([self.prefix_ids], None)[0] if self.prefix_reuse else None
        details = {"attention": ATTENTION, "scored_positions": "last", "head_rows": "yes,no",
                   "prefix_reuse": "on" if self.prefix_reuse else "off"}
        if settings.quantize == "int8":
            details["quantize"] = "int8"
        self.info = ScorerInfo(
            model=resolved.model_id,
            revision=resolved.revision,
            family=settings.model_family,
            backend="torch",
            device=str(self.device),
            dtype=str(dtype).removeprefix("torch."),
            max_length=self.max_length,
            details=details,
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
        documents_windows = [
            self._windows(ids, offsets, len(head), keep)
            for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
        ]
        return self._share_prefix(documents_windows) if self.prefix_reuse else documents_windows

    def _share_prefix(self, documents: list[EncodedDocument]) -> list[EncodedDocument]:
        """The same windows, each pointing at one `SharedPrefix`: the tokens all of them start with."""
        windows = [window.input_ids for document in documents for window in document.windows]
        prefix = SharedPrefix(windows[0][: shared_prefix_length(windows)], held=len(self.prefix_ids))
        return [
            EncodedDocument(
                tuple(EncodedPair(window.input_ids, prefix=prefix) for window in document.windows), document.truncated
            )
            for document in documents
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
        if self.system_cache is None or any(pair.prefix is None for pair in pairs):
            return self._score_full_prompts(pairs)
        prefixes = list({id(pair.prefix): pair.prefix for pair in pairs}.values())
        self._compute_prefixes([prefix for prefix in prefixes if prefix.state is None])
        hidden, _ = self._extend(
            [pair.prefix.state for pair in pairs], [pair.input_ids[len(pair.prefix.ids) :] for pair in pairs]
        )
        return self._raw_scores(hidden)

    def _score_full_prompts(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        """The model card's recipe: every prompt whole, left-padded, no cache."""
        ids, mask = pad_rows([pair.input_ids for pair in pairs], self.tokenizer.pad_token_id, side="left")
        hidden = self.model(
            input_ids=torch.from_numpy(ids).to(self.device),
            attention_mask=torch.from_numpy(mask).to(self.device),
            use_cache=False,
        ).last_hidden_state
        # Left padding puts every prompt's last token in the last column.
        return self._raw_scores(hidden[:, -1])

    def _raw_scores(self, last_hidden: torch.Tensor) -> np.ndarray:
        logits = last_hidden.float() @ self.yes_no_weight.T
        return (logits[:, 0] - logits[:, 1]).double().cpu().numpy()

    def _compute_prefixes(self, prefixes: Sequence[SharedPrefix]) -> None:
        """Runs the part of each prefix after the system prompt, in one pass, and keeps it on the prefix."""
        if not prefixes:
            return
        assert self.system_cache is not None
        tails = [prefix.ids[prefix.held :] for prefix in prefixes]
        with_tail = [index for index, tail in enumerate(tails) if tail]
        computed = self._run_prefixes([tails[index] for index in with_tail], self.system_cache) if with_tail else []
        for prefix in prefixes:
            prefix.state = self.system_cache
        for index, cache in zip(with_tail, computed, strict=True):
            prefixes[index].state = cache

    def _run_prefixes(self, rows: Sequence[Sequence[int]], after: PrefixCache | None) -> list[PrefixCache]:
        """Keys and values of `after` (if any) followed by each row's tokens, one cache per row."""
        _, cache = self._extend([after] * len(rows) if after is not None else None, rows)
        if len(rows) == 1:  # the usual pass, one new request: its row of the pass's cache is its cache, no copy
            layers = cache.layers
            return [PrefixCache(tuple(layer.keys for layer in layers), tuple(layer.values for layer in layers))]
        held, width = after.length if after is not None else 0, max(len(row) for row in rows)

        def unpadded(tensor: torch.Tensor, index: int, row: Sequence[int]) -> torch.Tensor:
            """Row `index` of a layer's cache: `after`, then the row's tokens without the left padding between."""
            start = held + width - len(row)
            return torch.cat([tensor[index : index + 1, :, :held], tensor[index : index + 1, :, start:]], dim=2)

        return [
            PrefixCache(tuple(unpadded(layer.keys, index, row) for layer in cache.layers),
                        tuple(unpadded(layer.values, index, row) for layer in cache.layers))
            for index, row in enumerate(rows)
        ]

    def _extend(
        self, prefixes: Sequence[PrefixCache] | None, rows: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, Cache]:
        """One forward pass of `rows`, each after its own prefix's keys and values (None: from position 0).

        Rows are left-padded to the longest, prefixes right-padded to the longest; the boolean mask lets
        each row see its own prefix's tokens and its own tokens causally, and positions continue after
        its prefix. Returns the last column's hidden states and the cache (padded prefixes, then rows).
        """
        device = self.device
        ids, own_mask = pad_rows(rows, self.tokenizer.pad_token_id, side="left")
        own_mask_t = torch.from_numpy(own_mask).to(device=device, dtype=torch.bool)
        prefix_lengths = torch.tensor([p.length for p in prefixes] if prefixes else [0] * len(rows), device=device)
        width, longest_prefix = ids.shape[1], int(prefix_lengths.max())
        # Positions: a row's first own token sits right after its prefix; padding columns get 0 (masked anyway).
        positions = (prefix_lengths[:, None] + own_mask_t.long().cumsum(dim=1) - 1).clamp(min=0)
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        own_part = causal[None] & own_mask_t[:, None, :]
        prefix_part = torch.arange(longest_prefix, device=device)[None, :] < prefix_lengths[:, None]
        mask = torch.cat([prefix_part[:, None, :].expand(-1, width, -1), own_part], dim=2)[:, None]
        if prefixes:
            cache = Cache(layers=[PrefixLayer(*layer) for layer in self._padded_prefixes(prefixes, longest_prefix)])
        else:
            cache = DynamicCache(config=self.model.config)
        output = self.model(
            input_ids=torch.from_numpy(ids).to(device), attention_mask=mask, position_ids=positions, cache=cache,
            use_cache=True,
        )
        return output.last_hidden_state[:, -1], output.cache

    def _padded_prefixes(self, prefixes: Sequence[PrefixCache], length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, every row's prefix keys and values right-padded to `length`.

        One prefix for the whole batch (a batch of one request; the system prompt under a prefix pass) is
        broadcast to every row, a view; several are padded once each and then gathered, a copy per row.
        """
        distinct = list({id(prefix): prefix for prefix in prefixes}.values())
        if len(distinct) == 1:
            rows = len(prefixes)
            return [(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1))
                    for keys, values in zip(distinct[0].keys, distinct[0].values, strict=True)]
        row_of = {id(prefix): index for index, prefix in enumerate(distinct)}
        rows = torch.tensor([row_of[id(prefix)] for prefix in prefixes], device=self.device)

        def padded(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
            return torch.cat([pad_tokens(tensor, length) for tensor in tensors]).index_select(0, rows)

        return [
            (padded([p.keys[layer] for p in distinct]), padded([p.values[layer] for p in distinct]))
            for layer in range(len(distinct[0].keys))
        ]


def pad_tokens(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """(rows, heads, tokens, dim) zero-padded on the right to `length` tokens."""
    return torch.nn.functional.pad(tensor, (0, 0, 0, length - tensor.shape[2]))


def is_qwen3_reranker(files: ModelFiles) -> bool:
    # A sentence-transformers layout marks an embedding model of the same architecture (Qwen3-Embedding).
    return "Qwen3ForCausalLM" in files.architectures and not files.has("modules.json")


FAMILY = FamilyEntry(
    detects="`Qwen3ForCausalLM`, not in sentence-transformers layout (Qwen3-Reranker; a Qwen3 chat model "
    "is indistinguishable from it and scored the same way)",
    detect=is_qwen3_reranker,
    loaders={"torch": Qwen3RerankerScorer},
    payload=None,
    int8_on_torch_cpu=True,
)
