"""Qwen3-Embedding (0.6B, 4B, 8B): a Qwen3 decoder in sentence-transformers layout, pooled on its last token.

The scorer is the bi-encoder family's (models/bi_encoder.py), which reads everything that makes this model an
embedding model from its directory: last-token pooling (so rows are padded on the left and the last column is
each text's last token, the `<|endoftext|>` its tokenizer.json appends), the Normalize module, and the
prompts of config_sentence_transformers.json (the published `query` one is
`Instruct: Given a web search query, retrieve relevant passages that answer the query\\nQuery:`, `document`
is empty); reranking embeds the query after the `query` prompt and documents after the `document` one.

Its own family only for the runtime: torch, never an ONNX export (a 0.6B to 8B decoder, for the reasons
qwen3.py gives), and on the CPU RERANK_QUANTIZE=int8 quantizes its linear layers one token at a time
(torch_int8), so a text's vector does not depend on what it is batched with.
"""

from __future__ import annotations

from transformers import AutoModel

from ..config import Settings
from .base import FamilyEntry, ModelFiles, Scorer
from .bi_encoder import BiEncoderScorer, QueryTokens
from .device import TorchRuntime
from .resolve import ResolvedModel
from .torch_int8 import quantize_linear_layers


def is_qwen3_embedding(files: ModelFiles) -> bool:
    is_qwen3 = "Qwen3ForCausalLM" in files.architectures or files.config.get("model_type") == "qwen3"
    return is_qwen3 and files.has("modules.json")


def load_torch(resolved: ResolvedModel, settings: Settings) -> Scorer:
    runtime = TorchRuntime(AutoModel.from_pretrained, resolved, settings)
    if settings.quantize == "int8":
        runtime.model = quantize_linear_layers(runtime.model)
        runtime.details["quantize"] = "int8"
    return BiEncoderScorer(resolved, settings, runtime)


FAMILY = FamilyEntry(
    detects="`modules.json` (sentence-transformers layout) and `Qwen3ForCausalLM` or model_type qwen3 "
    "(Qwen3-Embedding)",
    detect=is_qwen3_embedding,
    loaders={"torch": load_torch},
    payload=QueryTokens,
    int8_on_torch_cpu=True,
    tasks=frozenset({"rerank", "embed"}),
)
