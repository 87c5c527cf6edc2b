"""Errors of the training package, importable without torch (so the CLI catches them without loading torch)."""

__all__ = ["CheckpointError", "RunLockedError"]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, of an older format or belongs to another configuration."""


class RunLockedError(RuntimeError):
    """Another process is writing into the run folder (it holds the folder's lock)."""

    def __init__(self, message: str, *, run_dir: str = "", pid: int | None = None, host: str = "") -> None:
        super().__init__(message)
        self.run_dir = run_dir
        self.pid = pid
        self.host = host
