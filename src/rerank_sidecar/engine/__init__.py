"""Scheduling: requests become pairs, pairs become batches, one worker thread owns the model."""
