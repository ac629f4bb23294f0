"""All settings in one class. A value set in the environment wins over `.env.local`, which wins over `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from platformdirs import user_cache_dir, user_state_dir
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BUILTIN_MODEL_ID = "builtin:all-MiniLM-L6-v2"
DEFAULT_QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def _registered_family(name: str) -> str:
    """`auto`, or a family name of models/registry.py's FAMILIES."""
    from .models.registry import FAMILIES  # here, not at the top: models/ imports this module

    if name != "auto" and name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; the registry has auto, {', '.join(FAMILIES)}")
    return name


ModelFamily = Annotated[str, AfterValidator(_registered_family)]
Backend = Literal["auto", "torch", "onnx"]
Quantize = Literal["auto", "none", "int8"]
Task = Literal["rerank", "embed"]


class ModelSpec(BaseModel):
    """One model a sidecar may serve: an entry of RERANK_MODELS (JSON), or the one RERANK_MODEL_NAME names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="What clients send as `model`; unique in the list.")
    model: str = Field(description="Hub id (local cache only) or local directory; empty = the embedded default.")
    revision: str = Field("main", description="Commit sha or ref the hub id is pinned to.")
    aliases: list[str] = Field(default_factory=list, description="Other names clients may send for it.")
    family: ModelFamily | None = Field(None, description="Scorer family; None takes RERANK_MODEL_FAMILY.")
    backend: Backend | None = Field(None, description="Inference runtime; None takes RERANK_BACKEND.")
    quantize: Quantize | None = Field(None, description="None takes RERANK_QUANTIZE.")
    max_length: int | None = Field(None, ge=16, description="Longest tokenized pair; None takes RERANK_MAX_LENGTH.")
    tasks: list[Task] | None = Field(
        None, min_length=1, description="What requests may ask of it (rerank, embed); None: what its family serves."
    )

    @property
    def served_model_id(self) -> str:
        """The model id responses carry: the hub id or directory, or the embedded default's id."""
        return BUILTIN_MODEL_ID if not self.model or self.model == BUILTIN_MODEL_ID else self.model

    @property
    def names(self) -> list[str]:
        """Its name and its aliases: the names that always pick it (the pool adds its model id where unshared)."""
        return list(dict.fromkeys([self.name, *self.aliases]))


class Settings(BaseSettings):
    """Every `RERANK_*` variable; `.env.example` documents each one."""

    model_config = SettingsConfigDict(
        env_prefix="RERANK_",
        # Later files win: .env.local overrides .env; real environment variables override both.
        env_file=(".env", ".env.local"),
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # --- server ---
    sidecar_host: str = Field("127.0.0.1", description="Address to bind; loopback by default.")
    sidecar_port: int = Field(8765, ge=0, le=65535, description="TCP port to bind.")

    # --- model ---
    model_name: str = Field("", description="Hub id (local cache only) or local directory; empty = embedded default.")
    model_revision: str = Field("main", description="Commit sha or ref the hub id is pinned to.")
    model_family: ModelFamily = Field(
        "auto", description="Scorer family, a name in models/registry.py (cross-encoder, qwen3, qwen3-embedding, "
        "bi-encoder); auto detects it from the model's files."
    )
    model_aliases: str = Field(
        "", description="Comma-separated extra names requests may send as `model`, on every route that takes one."
    )
    model_tasks: str = Field(
        "", description="Comma-separated tasks the model serves (rerank, embed); empty: what its family serves "
        "(bi-encoder and qwen3-embedding: both; cross-encoder and qwen3: rerank)."
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="auto: cuda, then mps, then cpu.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="auto: float16 on GPU, float32 on CPU."
    )
    backend: Backend = Field(
        "auto", description="Inference runtime; auto: onnx on the CPU where the family has it, torch otherwise."
    )
    quantize: Quantize = Field(
        "auto",
        description="auto: int8 on the onnx backend for models whose int8 quality is measured (the embedded "
        "default), none for every other model and backend; int8: the onnx backend's per-token int8 (about 2x fp32 "
        "on the CPU), or Qwen3's own int8 on torch on the CPU, refused elsewhere.",
    )
    max_length: int = Field(512, ge=16, description="Longest tokenized pair the model sees.")
    instruction: str = Field(DEFAULT_QWEN3_INSTRUCTION, description="Default Qwen3-Reranker instruction.")
    qwen3_prefix_reuse: bool = Field(
        True, description="Qwen3: run each request's shared prompt head (system, instruction, query) once."
    )
    long_docs: Literal["truncate", "chunk"] = Field("truncate", description="What to do with over-long documents.")
    max_chunks_per_doc: int = Field(
        8, ge=1, description="Cap on windows per document in chunk mode, counted in model-length windows."
    )
    chunk_tokens: int = Field(
        0, ge=0, description="Window length in chunk mode (tokens); 0: a sentence (24) for bi-encoders, the "
        "model's length for cross-encoders and Qwen3.",
    )
    threads: int = Field(0, ge=0, description="Intra-op threads for inference; 0 = the cores available.")

    # --- several models ---
    models: list[ModelSpec] = Field(
        default_factory=list,
        description='JSON list of models to serve, e.g. [{"name": "qwen3", "model": "Qwen/Qwen3-Reranker-0.6B", '
        '"revision": "<sha>"}, {"name": "minilm", "model": "/models/minilm", "aliases": ["rerank-v3.5"]}]; '
        "empty = the one model of RERANK_MODEL_NAME. Each entry may set aliases, family, backend, quantize, max_length, "
        "tasks.",
    )
    keep_alive_s: float | None = Field(
        None, gt=0, description="Unload a model idle this many seconds (loaded again on its next request); unset = never."
    )
    max_loaded_models: int = Field(
        0, ge=0, description="Most models loaded at once; loading another evicts the least recently used idle one. 0 = no limit."
    )

    # --- engine ---
    scheduler: Literal["batched", "serial"] = Field("batched", description="batched = micro-batching; serial = one lock.")
    max_batch_tokens: int = Field(
        0, ge=0, description="Token budget of one forward pass (padded length x pairs); 0 = 2048 on CPU, 16384 on GPU."
    )
    max_batch_pairs: int = Field(64, ge=1, description="Most pairs in one forward pass.")
    embed_share: float = Field(
        0.05, gt=0, le=1, description="Most of a round's token budget that embedding texts take while rerank pairs "
        "for the same model wait (batched scheduler; at least one text a round); 1 = no bound, fewest-left first alone."
    )
    max_queued_pairs: int = Field(20000, ge=1, description="Queue bound; past it requests get 503 + Retry-After.")
    request_timeout_s: float = Field(120.0, gt=0, description="Deadline after which a request's pending pairs are dropped.")
    cache_size: int = Field(0, ge=0, description="LRU score cache entries; 0 disables it.")

    # --- limits ---
    max_documents: int = Field(1000, ge=1, description="Most documents in one request.")
    max_document_chars: int = Field(100_000, ge=1, description="Longest document, in characters.")
    max_query_chars: int = Field(10_000, ge=1, description="Longest query or instruction, in characters.")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1, description="Largest request body, in bytes.")

    # --- embeddings ---
    auto_truncate: bool = Field(
        False, description="Cut an input longer than the model's window on /v1/embeddings (and /v2/embed with "
        "truncate NONE) instead of answering 400, as TEI's auto_truncate."
    )
    max_embed_inputs: int = Field(2048, ge=1, description="Most texts in one embedding request.")

    # --- security ---
    api_key: str = Field("", description="When set, every route but /health needs 'Authorization: Bearer <key>'.")
    allow_unauthenticated: bool = Field(False, description="Allow a non-loopback bind without an API key.")

    # --- Ray Serve (`serve --ray`, extra rerank-sidecar[ray]) ---
    ray_min_replicas: int = Field(
        1, ge=1, description="Fewest replicas (each a whole sidecar, with its own engines)."
    )
    ray_max_replicas: int = Field(
        1, ge=1, description="Most replicas; above the fewest, Ray autoscales between the two."
    )
    ray_target_ongoing_requests: float = Field(
        8.0, gt=0, description="Autoscaling target: requests in flight per replica (batching wants several)."
    )
    ray_max_ongoing_requests: int = Field(
        64, ge=1, description="Requests one replica takes at once; more wait in Ray's router."
    )
    ray_replica_cpus: float = Field(
        1.0, gt=0, description="CPUs Ray reserves per replica; also its threads when RERANK_THREADS=0."
    )
    ray_replica_gpus: float = Field(0.0, ge=0, description="GPUs Ray reserves per replica (fractions share one GPU).")

    # --- request log ---
    log_path: Path = Field(
        default_factory=lambda: Path(user_state_dir("rerank-sidecar")) / "requests.jsonl",
        description="JSONL request log.",
    )
    log_text: bool = Field(False, description="Also log query and document text (off: privacy).")
    log_max_bytes: int = Field(50 * 1024 * 1024, ge=0, description="Rotate the log past this size; 0 = never.")
    log_backups: int = Field(3, ge=0, description="Rotated log files kept.")

    # --- files ---
    cache_dir: Path = Field(
        default_factory=lambda: Path(user_cache_dir("rerank-sidecar")),
        description="Where exported ONNX models and other derived files are cached.",
    )
    state_dir: Path = Field(
        default_factory=lambda: Path(user_state_dir("rerank-sidecar")),
        description="Where `ensure` keeps its pid file, start lock and the started server's output log.",
    )

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        seen: dict[str, str] = {}
        for spec in models:
            for name in spec.names:
                if name in seen and seen[name] != spec.name:
                    raise ValueError(f"RERANK_MODELS: the name {name!r} picks both {seen[name]!r} and {spec.name!r}")
                seen[name] = spec.name
        return models

    @property
    def model_specs(self) -> list[ModelSpec]:
        """The models to serve, the default first: RERANK_MODELS, or the one model of RERANK_MODEL_NAME."""
        if self.models:
            return list(self.models)
        return [ModelSpec(name=self.served_model_id, model=self.model_name, revision=self.model_revision,
                          aliases=self.aliases)]

    def for_model(self, spec: ModelSpec) -> Settings:
        """These settings with the model fields of `spec`: what one model's engine and scorer read."""
        overrides = {"family": "model_family", "backend": "backend", "quantize": "quantize", "max_length": "max_length"}
        update = {"model_name": spec.model, "model_revision": spec.revision, "model_aliases": ",".join(spec.aliases),
                  "model_tasks": ",".join(spec.tasks or []), "models": []}
        update.update({field: getattr(spec, key) for key, field in overrides.items() if getattr(spec, key) is not None})
        return self.model_copy(update=update)

    @field_validator("model_tasks")
    @classmethod
    def _known_tasks(cls, value: str) -> str:
        unknown = [task.strip() for task in value.split(",") if task.strip() not in ("", "rerank", "embed")]
        if unknown:
            raise ValueError(f"RERANK_MODEL_TASKS: unknown task(s) {', '.join(unknown)}; the tasks are rerank, embed")
        return value

    @property
    def tasks(self) -> tuple[str, ...]:
        """RERANK_MODEL_TASKS as a tuple; empty: what the model's family serves."""
        return tuple(dict.fromkeys(task.strip() for task in self.model_tasks.split(",") if task.strip()))

    @property
    def aliases(self) -> list[str]:
        return [alias.strip() for alias in self.model_aliases.split(",") if alias.strip()]

    @property
    def uses_builtin_model(self) -> bool:
        return not self.model_name or self.model_name == BUILTIN_MODEL_ID

    @property
    def served_model_id(self) -> str:
        return BUILTIN_MODEL_ID if self.uses_builtin_model else self.model_name
