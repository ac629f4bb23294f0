"""The Qwen3-Embedding model card's transformers recipe, run as published, and the texts the tests embed.

The reference test_models_qwen3_embedding.py holds the sidecar to: written out here from the model card
(`last_token_pool`, `get_detailed_instruct`, the tokenizer padding on the left, `F.normalize`), independently
of the code under test, always run in fp32 on the CPU.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import AutoModel, AutoTokenizer

# The model card's task for web search, the one the published `query` prompt carries.
CARD_TASK = "Given a web search query, retrieve relevant passages that answer the query"

# The window the tests serve, and what they embed: lengths that differ (so batches pad), one past the window.
MAX_LENGTH = 64
QUERIES = [
    "How do rivers move sediment to the sea?",
    "capital of China",
    "Explain gravity to a ten-year-old, with one example from everyday life and one from astronomy",
]
DOCUMENTS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other. It gives weight to physical objects.",
    "Rivers pick up sand and silt where the current is fast and drop it where the water slows. " * 6,  # cut
    "Sediment.",
]


def last_token_pool(last_hidden_states: Tensor, attention_mask: Tensor) -> Tensor:
    """The model card's pooling: the hidden state of each text's last token, under either padding side."""
    left_padding = attention_mask[:, -1].sum() == attention_mask.shape[0]
    if left_padding:
        return last_hidden_states[:, -1]
    sequence_lengths = attention_mask.sum(dim=1) - 1
    batch_size = last_hidden_states.shape[0]
    return last_hidden_states[torch.arange(batch_size, device=last_hidden_states.device), sequence_lengths]


def get_detailed_instruct(task_description: str, query: str) -> str:
    """The model card's query format."""
    return f"Instruct: {task_description}\nQuery:{query}"


@functools.cache
def model_card_model(snapshot: Path) -> tuple:
    """Tokenizer and model, loaded as the model card loads them (once per snapshot)."""
    tokenizer = AutoTokenizer.from_pretrained(snapshot, padding_side="left")
    return tokenizer, AutoModel.from_pretrained(snapshot).eval()


def model_card_embeddings(snapshot: Path, input_texts: list[str], max_length: int) -> np.ndarray:
    """The model card's recipe: tokenize with padding and truncation, last-token pool, L2-normalize."""
    tokenizer, model = model_card_model(snapshot)
    batch_dict = tokenizer(input_texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**batch_dict)
    embeddings = last_token_pool(outputs.last_hidden_state, batch_dict["attention_mask"])
    return F.normalize(embeddings, p=2, dim=1).numpy()


def card_queries(snapshot: Path, queries: list[str], max_length: int = MAX_LENGTH) -> np.ndarray:
    """Queries with the model card's web-search instruction."""
    return model_card_embeddings(snapshot, [get_detailed_instruct(CARD_TASK, query) for query in queries], max_length)


def card_documents(snapshot: Path, documents: list[str], max_length: int = MAX_LENGTH) -> np.ndarray:
    """Documents as the model card embeds them: no instruction."""
    return model_card_embeddings(snapshot, documents, max_length)
