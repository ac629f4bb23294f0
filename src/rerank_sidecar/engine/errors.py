"""Why the engine refuses or fails a request; torch-free, so the HTTP layer maps them without loading a model."""

from __future__ import annotations


class ModelUnavailable(RuntimeError):
    """The model could not be loaded; the message says why and how to fix it."""


class DeadlineExceeded(TimeoutError):
    """The request's pairs were not all scored before RERANK_REQUEST_TIMEOUT_S."""


class QueueFull(RuntimeError):
    """The queue bound would be passed; the client should retry after `retry_after_s`."""

    def __init__(self, queued: int, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"the scoring queue is full ({queued} pairs queued, limit {limit}, RERANK_MAX_QUEUED_PAIRS); "
            f"retry after {retry_after_s} s"
        )
        self.retry_after_s = retry_after_s


class RequestTooLarge(ValueError):
    """One request holds more pairs than the whole queue may; retrying cannot help."""

    def __init__(self, pairs: int, limit: int) -> None:
        super().__init__(
            f"the request needs {pairs} pairs (documents x chunks) but the queue holds at most {limit} "
            "(RERANK_MAX_QUEUED_PAIRS); send fewer documents per request"
        )


class DocumentTooLong(ValueError):
    """A document does not fit the model's window and the caller asked not to truncate it."""

    def __init__(self, index: int, tokens: int, limit: int) -> None:
        super().__init__(
            f"{index}: this text needs a window of {tokens} tokens with the query and special tokens, more than "
            f"the model reads (max_input_length {limit}); send truncate: true or a shorter text"
        )
        self.index = index
        self.tokens = tokens
        self.limit = limit


class SchedulerStopped(RuntimeError):
    """The sidecar is shutting down and accepts no new work."""


class UnknownModel(LookupError):
    """A request named a model this sidecar does not list; the message lists what it serves."""

    def __init__(self, requested: str, served: list[tuple[str, list[str]]]) -> None:
        listing = ", ".join(
            f"{name!r}" + (f" (aliases: {', '.join(aliases)})" if aliases else "") for name, aliases in served
        )
        super().__init__(
            f"model {requested!r} is not served here; this sidecar serves {listing} "
            "(add it to RERANK_MODELS, or a name to RERANK_MODEL_ALIASES)"
        )
