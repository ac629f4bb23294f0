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


class TaskNotServed(ValueError):
    """A request asked a model for a task it does not serve (RERANK_MODEL_TASKS, or its family's)."""

    def __init__(self, model: str, task: str, tasks: tuple[str, ...]) -> None:
        verb = "embed" if task == "embed" else "rerank"
        super().__init__(
            f"model {model!r} cannot {verb}: it serves {' and '.join(tasks) or 'nothing'} only; "
            f"name a model that serves {task} (GET /v1/models lists each model's tasks)"
        )
        self.model = model
        self.task = task
        self.tasks = tasks


class CannotEmbed(TaskNotServed):
    """An embedding request named a model that only reranks."""

    def __init__(self, model: str, tasks: tuple[str, ...]) -> None:
        super().__init__(model, "embed", tasks)


class CannotRerank(TaskNotServed):
    """A rerank request named a model listed for embeddings only."""

    def __init__(self, model: str, tasks: tuple[str, ...]) -> None:
        super().__init__(model, "rerank", tasks)


class TextTooLong(ValueError):
    """A text to embed does not fit the model's window and the caller asked not to truncate it."""

    def __init__(self, index: int, tokens: int, limit: int) -> None:
        super().__init__(
            f"{index}: this text needs {tokens} tokens with the prompt and special tokens, more than the model "
            f"reads (max_input_length {limit}); send a shorter text or ask for truncation"
        )
        self.index = index
        self.tokens = tokens
        self.limit = limit


class UnknownPrompt(ValueError):
    """A request named a prompt the model does not have."""

    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(
            f"prompt {name!r} is not one of the model's prompts ({', '.join(available) or 'it has none'})"
        )
        self.name = name
        self.available = available


class DimensionsTooLarge(ValueError):
    """A request asked for more dimensions than the model's vectors have."""

    def __init__(self, requested: int, size: int) -> None:
        super().__init__(f"dimensions {requested} is more than the model's {size}; ask for at most {size}")
        self.requested = requested
        self.size = size
