"""Errors of the training package, importable without torch (so the CLI catches them without loading torch)."""

__all__ = ["CheckpointError"]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or belongs to another configuration."""
