"""Model backends: one file per family behind the `Scorer` interface of `base.py`."""
