"""The Qwen3-Reranker model card's recipe, run as published, and the texts the Qwen3 tests score.

The reference every Qwen3 parity test holds the backend to (test_models_qwen3.py, test_qwen3_prefix.py):
written out here independently of the backend under test, always run in fp32 on the CPU.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from model_factory import TinyQwen3Cache
from transformers import AutoModelForCausalLM, AutoTokenizer

from rerank_sidecar.config import Settings
from rerank_sidecar.models.base import Scorer
from rerank_sidecar.models.registry import load_scorer

# The model card's strings.
CARD_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
CARD_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
CARD_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"

# The window the Qwen3 tests serve, and what they score: some documents past the window, one empty.
MAX_LENGTH = 128
QUERY = "How do rivers move sediment to the sea?"
CUSTOM_INSTRUCTION = "Given a geology question, find passages written for children"
RIVER = (
    "Rivers pick up sand and silt where the current is fast and drop it where the water slows, "
    "building deltas at the coast. "
)
DOCUMENTS = [
    "Sediment.",
    "Rivers carry sediment downstream.",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
    RIVER * 2,
    RIVER * 12,  # far past the 128-token window: truncated
    "Bread rises because yeast ferments sugar and releases carbon dioxide. " * 9,  # truncated too
    "",
]


@functools.cache
def model_card_model(snapshot: Path) -> tuple:
    """Tokenizer and full causal LM, loaded as the model card loads them (once per snapshot)."""
    tokenizer = AutoTokenizer.from_pretrained(snapshot, padding_side="left")
    return tokenizer, AutoModelForCausalLM.from_pretrained(snapshot).eval()


def model_card_raw_scores(
    snapshot: Path, query: str, documents: list[str], instruction: str | None, max_length: int, keep_suffix: bool = True
) -> tuple[np.ndarray, list[int]]:
    """The Qwen3-Reranker model card's recipe, run as published (full forward, full-vocabulary logits).

    Returns yes_logprob - no_logprob at the last position (which equals logit_yes - logit_no) and the indices
    whose prompt body the recipe cut. `keep_suffix=False` is the naive alternative of cutting the whole prompt
    to `max_length`, which loses the suffix on long inputs.
    """
    tokenizer, model = model_card_model(snapshot)
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    prefix_tokens = tokenizer.encode(CARD_PREFIX, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(CARD_SUFFIX, add_special_tokens=False)
    instruction = instruction or CARD_DEFAULT_INSTRUCTION
    pairs = [f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}" for doc in documents]
    budget = max_length - len(prefix_tokens) - len(suffix_tokens)
    full = tokenizer(pairs, padding=False, truncation=False, return_attention_mask=False)["input_ids"]
    cut = [index for index, ids in enumerate(full) if len(ids) > budget]
    if keep_suffix:
        inputs = tokenizer(
            pairs, padding=False, truncation="longest_first", return_attention_mask=False, max_length=budget
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
    else:
        inputs = {"input_ids": [(prefix_tokens + ids + suffix_tokens)[:max_length] for ids in full]}
    inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt")
    with torch.no_grad():
        batch_scores = model(**inputs).logits[:, -1, :]
    batch_scores = torch.stack([batch_scores[:, token_false_id], batch_scores[:, token_true_id]], dim=1)
    log_probs = torch.nn.functional.log_softmax(batch_scores, dim=1)
    return (log_probs[:, 1] - log_probs[:, 0]).double().numpy(), cut


def local_scorer(cache: TinyQwen3Cache, **settings: object) -> Scorer:
    """The Qwen3 scorer loaded in this process from the snapshot directory."""
    return load_scorer(Settings(model_name=str(cache.snapshot), threads=2, **settings))
