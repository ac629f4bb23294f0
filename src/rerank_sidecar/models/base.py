"""The one small interface every model family implements, and the types that cross it."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from ..config import Settings
    from .resolve import ResolvedModel

LongDocs = Literal["truncate", "chunk"]
TruncationSide = Literal["right", "left"]
Backend = Literal["torch", "onnx"]
PayloadT = TypeVar("PayloadT")

# Overlap between consecutive windows in chunk mode, as a fraction of the window.
CHUNK_OVERLAP = 0.125

# What a token of a shared prefix costs a batch row that attends to it, as a fraction of one of the row's
# own tokens: it is only read as keys and values (no projections, no MLP). Measured on Qwen3-Reranker-0.6B's
# shape (random weights, fp32, 2-core EPYC shared with other jobs): 16 rows of 96 own tokens took 34.5 s
# after no prefix, 36.3 s after 96 prefix tokens and 40.6 s after 384, about 0.05 of an own token each.
PREFIX_TOKEN_WEIGHT = 0.05


@dataclass(slots=True)
class SharedPrefix:
    """Leading tokens every window of one request starts with (Qwen3: system prompt, instruction, query)."""

    ids: tuple[int, ...]
    """The shared tokens; each window's `input_ids` begin with them."""
    held: int = 0
    """Leading tokens of `ids` the scorer holds already and does not run again (Qwen3: the system prompt)."""
    state: Any = field(default=None, compare=False, repr=False)
    """What the scorer computed from `ids` once (its keys and values); freed with the request's pairs."""

    def __hash__(self) -> int:
        return hash(self.ids)

    @property
    def pass_tokens(self) -> int:
        """Tokens the scorer still has to run for this prefix: its tail after `held`, or 0 once computed."""
        return 0 if self.state is not None else len(self.ids) - self.held


@dataclass(frozen=True, slots=True)
class EncodedPair(Generic[PayloadT]):
    """One unit of model work: a (query, document window) pair, tokenized once.

    Build it as `EncodedPair(...)`; `EncodedPair[X]` is for annotations only (on Python 3.11 a call through the
    subscripted alias of a frozen slots dataclass raises TypeError).
    """

    input_ids: tuple[int, ...]
    """Tokens that fill the batch: the joined pair, the Qwen3 prompt, or (bi-encoder) the document."""
    payload: PayloadT | None = None
    """What the family's scorer needs beside the tokens, of a type its own file defines; None where it needs nothing."""
    prefix: SharedPrefix | None = None
    """Qwen3 with prefix reuse: the head of `input_ids` shared with the request's other windows, run once."""

    @property
    def cost(self) -> int:
        """Work this pair adds to a batch row, in tokens: its own tokens, plus attention over a shared prefix.

        The pass that computes the prefix is not in it: the planner charges that to the batch running it
        (`SharedPrefix.pass_tokens`, `BatchBudget.plan`).
        """
        if self.prefix is None:
            return len(self.input_ids)
        shared = len(self.prefix.ids)
        return len(self.input_ids) - shared + math.ceil(shared * PREFIX_TOKEN_WEIGHT)


@dataclass(frozen=True, slots=True)
class EncodedDocument:
    """A document's windows: one in truncate mode, up to `max_chunks_per_doc` in chunk mode."""

    windows: tuple[EncodedPair, ...]
    """The pairs to score; the document's raw score is the best window's."""
    truncated: bool
    """True when some of the document's text was not scored (cut, or beyond the chunk cap)."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """Maps a raw score to [0, 1] as sigmoid(scale * raw + bias)."""

    scale: float = 1.0
    """Multiplier on the raw score (1 for logit-producing rerankers)."""
    bias: float = 0.0
    """Offset added before the sigmoid (0 for logit-producing rerankers)."""


@dataclass(frozen=True, slots=True)
class ScorerInfo:
    """What a loaded scorer is; reported by /health and in every response."""

    model: str
    """The served model id (hub id, directory, or the builtin id)."""
    revision: str
    """The resolved commit sha, or a content tag for models without one."""
    family: str
    """Its family's name in the registry (models/registry.py FAMILIES)."""
    backend: str
    """Inference runtime, e.g. torch or onnx."""
    device: str
    """Where the forward pass runs (cpu, cuda, mps)."""
    dtype: str
    """Weights' precision."""
    max_length: int
    """Longest tokenized pair the model sees."""
    details: dict[str, str] = field(default_factory=dict)
    """Backend-specific facts worth showing in /health (e.g. quantization, ONNX file)."""
    labels: tuple[str, ...] = ("LABEL_0",)
    """Names of the model's outputs (a cross-encoder's id2label; the transformers default otherwise), for /info."""
    tasks: tuple[str, ...] = ("rerank",)
    """What requests may ask of it: rerank, embed (RERANK_MODEL_TASKS, else its family's)."""
    embedding: EmbeddingInfo | None = None
    """How it embeds; None for a model that cannot."""


@dataclass(frozen=True, slots=True)
class EmbeddingInfo:
    """How a model that embeds turns a text into one vector (read from its sentence-transformers files)."""

    dimensions: int
    """Size of one vector."""
    normalized: bool
    """Whether the model L2-normalizes its vectors (a Normalize module in modules.json)."""
    pooling: str
    """How token states become one vector: mean, cls or lasttoken."""
    prompts: dict[str, str] = field(default_factory=dict)
    """Named prompts put before a text (config_sentence_transformers.json), e.g. query and document."""
    default_prompt_name: str | None = None
    """The prompt used when a request names none; None: no prompt."""


@dataclass(frozen=True, slots=True)
class PassOutput:
    """What one forward pass gives back, row for row with the pairs it ran."""

    scores: np.ndarray
    """Raw score of each rerank pair (float64); NaN on an embedding text's row."""
    vectors: np.ndarray | None = None
    """Pooled, unnormalized vector of each row (float32, rows x dimensions); None from a model that cannot embed."""


class Scorer(ABC):
    """Tokenizes (query, document) pairs once and scores batches of them to raw values."""

    info: ScorerInfo
    calibration: Calibration = Calibration()
    tokenizer: PreTrainedTokenizerBase
    """The model's fast tokenizer; `cut_documents` counts a document's tokens with it."""

    @abstractmethod
    def encode(
        self, query: str, documents: Sequence[str], instruction: str | None, long_docs: LongDocs, max_chunks: int
    ) -> list[EncodedDocument]:
        """Tokenize every document against the query; one `EncodedDocument` per input document."""

    @abstractmethod
    def score_batch(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        """Raw scores (float64), one per pair, in the order given. Runs on the engine's worker thread."""

    def run_pass(self, pairs: Sequence[EncodedPair]) -> PassOutput:
        """One forward pass over a batch, as the engine's schedulers run it; a model that embeds also gives vectors."""
        return PassOutput(scores=self.score_batch(pairs))

    def relevance(self, raw: np.ndarray) -> np.ndarray:
        """The one place raw scores become [0, 1] relevance: sigmoid(scale * raw + bias)."""
        z = self.calibration.scale * np.asarray(raw, dtype=np.float64) + self.calibration.bias
        return 1.0 / (1.0 + np.exp(-z))

    def cut_documents(self, documents: Sequence[str], max_tokens: int) -> tuple[list[str], set[int]]:
        """Each document cut to its first `max_tokens` tokens (counted alone, no special tokens), and which were cut.

        The text is cut at a token boundary, not turned into ids, so every backend's own encode
        (pair joining, prompts, chunk windows) applies unchanged to the shorter text.
        """
        return self._cut_to_tokens(documents, max_tokens, keep_end=False)

    def keep_document_ends(self, documents: Sequence[str], max_tokens: int) -> tuple[list[str], set[int]]:
        """Each document cut to its last `max_tokens` tokens, and which were cut: truncation on the left."""
        return self._cut_to_tokens(documents, max_tokens, keep_end=True)

    def _cut_to_tokens(self, documents: Sequence[str], max_tokens: int, keep_end: bool) -> tuple[list[str], set[int]]:
        if not documents:
            return [], set()
        encoded = self.tokenizer(list(documents), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        kept: list[str] = []
        cut: set[int] = set()
        for index, (document, offsets) in enumerate(zip(documents, encoded["offset_mapping"], strict=True)):
            if len(offsets) <= max_tokens:
                kept.append(document)
                continue
            cut.add(index)
            if keep_end:
                kept.append(document[offsets[len(offsets) - max_tokens][0] :])
            else:
                kept.append(document[: offsets[max_tokens - 1][1]])
        return kept, cut

    def document_room(self, query: str, instruction: str | None) -> int:
        """Tokens of document one window holds beside this query: the window less what an empty document needs."""
        empty = self.encode(query, [""], instruction, "truncate", 1)[0].windows[0]
        return max(1, self.info.max_length - len(empty.input_ids))

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` alone, without special tokens."""
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def close(self) -> None:
        """Release what the scorer holds; the default has nothing to release."""


class EmbeddingScorer(Scorer):
    """A scorer that also embeds texts: an embedding text is an `EncodedPair` with no payload, in any batch."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str], prompt: str) -> list[EncodedDocument]:
        """Each text after `prompt`, tokenized to one window cut to the model's length (`truncated` says so)."""

    def text_room(self, prompt: str) -> int:
        """Tokens of text one window holds after `prompt`: the window less what an empty text needs."""
        empty = self.encode_texts([""], prompt)[0].windows[0]
        return max(1, self.info.max_length - len(empty.input_ids))


class Runtime(Protocol):
    """A model's forward pass over padded batches: the part of a scorer torch and onnxruntime each do their way."""

    backend: str
    """Its name in /health: torch or onnx."""
    device: str
    """Where it runs (cpu, cuda, mps)."""
    dtype: str
    """Its weights' precision."""
    details: dict[str, str]
    """Facts about it worth showing in /health (e.g. the ONNX file, the quantization)."""

    def run(self, batch: Mapping[str, np.ndarray]) -> torch.Tensor:
        """The model's first output for a padded batch: a classifier's logits, or an encoder's token states."""
        ...


def describe(
    resolved: ResolvedModel,
    settings: Settings,
    runtime: Runtime,
    max_length: int,
    labels: tuple[str, ...] = ("LABEL_0",),
) -> ScorerInfo:
    """What /health reports of a scorer that runs on `runtime`; `settings.model_family` names its family."""
    return ScorerInfo(
        model=resolved.model_id,
        revision=resolved.revision,
        family=settings.model_family,
        backend=runtime.backend,
        device=runtime.device,
        dtype=runtime.dtype,
        max_length=max_length,
        details=dict(runtime.details),
        labels=labels,
    )


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """What family detection reads of a model on disk."""

    path: Path
    """The model's directory."""
    config: Mapping[str, Any]
    """Its config.json."""

    @property
    def architectures(self) -> list[str]:
        """The model classes config.json names (empty when unset)."""
        return list(self.config.get("architectures") or [])

    def has(self, name: str) -> bool:
        """Whether the directory holds the file `name`."""
        return (self.path / name).is_file()


Loader = Callable[["ResolvedModel", "Settings"], Scorer]
"""Builds a family's scorer on one runtime from the model on disk and its settings."""


@dataclass(frozen=True, slots=True)
class FamilyEntry:
    """What the registry needs of a model family. Its file defines one as `FAMILY`; the registry gives it a name."""

    detects: str
    """What `detect` looks for, in words: the error for a model no family detects lists it."""
    detect: Callable[[ModelFiles], bool]
    """True for a model of this family, read off its files (RERANK_MODEL_FAMILY=auto)."""
    loaders: Mapping[Backend, Loader]
    """One scorer builder per runtime the family runs on."""
    payload: type | None
    """The type of `EncodedPair.payload` its scorers produce and read; None where its pairs carry none."""
    int8_on_torch_cpu: bool = False
    """Whether its torch scorer quantizes itself to int8 on the CPU; other families need the onnx backend for int8."""
    tasks: frozenset[str] = frozenset({"rerank"})
    """What its models serve: rerank, and embed for a family whose scorer is an `EmbeddingScorer`."""


def pad_rows(
    rows: Sequence[Sequence[int]], pad_id: int, side: Literal["right", "left"] = "right"
) -> tuple[np.ndarray, np.ndarray]:
    """Token rows padded to the longest as an int64 matrix, and its attention mask: what `tokenizer.pad` gives.

    At a twentieth of `tokenizer.pad`'s cost: on a 2-core EPYC, 64 pairs of about 100 tokens took
    8 ms there and 0.4 ms here, on the model's worker thread and holding the GIL. An H200 scores
    such a batch of MiniLM-L6 in 4 to 6 ms (its in-process ceilings, docs/bench/gpu-h200.md).
    """
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max())
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    for index, row in enumerate(rows):
        if side == "right":
            ids[index, : len(row)] = row
        else:
            ids[index, width - len(row) :] = row
    columns = np.arange(width)
    mask = columns < lengths[:, None] if side == "right" else columns >= (width - lengths)[:, None]
    return ids, mask.astype(np.int64)


def chunk_stride(window_tokens: int) -> int:
    """Tokens shared by consecutive windows in chunk mode."""
    return max(1, math.floor(window_tokens * CHUNK_OVERLAP))


def group_windows(
    windows: Sequence[EncodedPair], owners: Sequence[int], n_documents: int, long_docs: LongDocs, max_chunks: int
) -> list[EncodedDocument]:
    """Groups tokenizer overflow windows by document; truncate keeps the first, chunk up to `max_chunks`."""
    per_doc: list[list[EncodedPair]] = [[] for _ in range(n_documents)]
    for window, owner in zip(windows, owners, strict=True):
        per_doc[owner].append(window)
    keep = 1 if long_docs == "truncate" else max_chunks
    return [EncodedDocument(windows=tuple(ws[:keep]), truncated=len(ws) > keep) for ws in per_doc]
