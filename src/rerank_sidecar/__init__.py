"""rerank-sidecar: one local HTTP reranker shared by every process on the machine."""

__version__ = "0.1.0"
