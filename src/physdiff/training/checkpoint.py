"""Checkpoints: atomic, checksummed, the previous one kept; read with ``weights_only=True``.

Format 2: a ``torch.save`` zip archive of ``{"format_version": 2, "model", "ema", "optimizer", "step",
"config"}`` whose zip comment (the last bytes of the file) is ``physdiff-sha256:<64 hex digits>``, the
sha256 of every byte before it. Zip readers ignore comments, so ``torch.load(path, weights_only=True)``
reads the file as before; :func:`load_checkpoint` checks the digest first, so one flipped byte or a
truncated file is detected instead of loading silently.

:func:`save_checkpoint` writes through :func:`physdiff.outputs.atomic_path` (a temporary file in the same
folder, fsynced; links at the target refused), keeps the file it replaces
as ``<stem>.prev<suffix>`` (``checkpoint.pt`` → ``checkpoint.prev.pt``, via a hard link, so the newest name
always exists) and renames the new file into place; SIGINT is deferred until that is done. When the newest
checkpoint is damaged or missing, :func:`load_checkpoint` falls back to the previous one with a warning.
Format 1 (no checksum; written before the networks conditioned on log σ/α) is refused.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import shutil
import struct
import warnings
from pathlib import Path
from typing import IO, Any

import torch

from physdiff.outputs import atomic_path, check_target, temp_name
from physdiff.training.errors import CheckpointError
from physdiff.training.interrupts import defer_sigint

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "load_latest_checkpoint",
    "previous_path",
    "promote_previous",
    "remove_stale_temp_files",
    "check_config_matches",
]

FORMAT_VERSION = 2
_MAGIC = b"physdiff-sha256:"
_TRAILER = len(_MAGIC) + 64  # the zip comment: magic + hex digest
_EOCD_SIG = b"PK\x05\x06"  # end-of-central-directory record: 22 bytes, the last 2 the comment length
_EOCD = 22


class _Unusable(CheckpointError):
    """The file is missing, damaged or not a checkpoint: a reason to fall back to the previous one."""


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint replaced by the newest one is kept: ``checkpoint.pt`` → ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: str | Path, state: dict[str, Any], *, keep_previous: bool = True) -> None:
    """Write ``state`` to ``path`` atomically with a checksum; the file it replaces becomes the previous one.

    With ``keep_previous=False`` the file starts a new series (e.g. the first save of a fresh run in a used
    folder): the replaced file and any previous one are dropped, so a fallback never reaches another run.
    A crash leaves either the old or the new file (plus a stale ``.tmp`` that :func:`remove_stale_temp_files`
    removes); a Ctrl-C during the write is delivered after the rename.
    """
    path = Path(path)
    obj = {**state, "format_version": FORMAT_VERSION}
    buf = io.BytesIO()  # serialised first: a full disk is then an OSError of the write, naming the file
    torch.save(obj, buf)
    _append_checksum(buf)
    with defer_sigint(), atomic_path(path) as tmp:
        with open(tmp, "r+b") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())  # on disk before the current file becomes the previous one
        if keep_previous and check_target(path):
            _keep_as_previous(path)
        elif not keep_previous:
            _remove_regular(previous_path(path))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a verified checkpoint (``weights_only=True``), falling back to the previous one if it is damaged."""
    return load_latest_checkpoint(path, map_location)[0]


def load_latest_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path]:
    """Like :func:`load_checkpoint`, and also return the file that was loaded (``path`` or its previous)."""
    path, prev = Path(path), previous_path(path)
    try:
        return _load_one(path, map_location), path
    except _Unusable as e:
        first = e
    if not prev.is_file():
        if path.is_file():
            raise CheckpointError(f"{first} (and there is no previous checkpoint {prev} to fall back to)") from None
        raise first from None
    try:
        state = _load_one(prev, map_location)
    except _Unusable as e:
        raise CheckpointError(f"{first}; the previous checkpoint {prev} is unusable too: {e}") from None
    warnings.warn(f"{first}; falling back to the previous checkpoint {prev} (step {state['step']})", stacklevel=2)
    return state, prev


def promote_previous(path: str | Path) -> Path | None:
    """After a fallback: move a damaged newest checkpoint aside (``<name>.corrupt``, returned) and make the
    previous checkpoint the newest again (both names then hold it). Writers only (hold the folder's lock)."""
    path = Path(path)
    aside = None
    if check_target(path):
        aside = path.with_name(path.name + ".corrupt")
        check_target(aside)
        os.replace(path, aside)
    with defer_sigint():
        tmp = temp_name(path)
        try:
            os.link(previous_path(path), tmp)
        except OSError:  # no hard links on this filesystem
            shutil.copy2(previous_path(path), tmp)
        os.replace(tmp, path)
    return aside


def remove_stale_temp_files(directory: str | Path, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files (``.<name>.*.tmp``) that interrupted writes of ``names`` left behind.

    Only call this while holding the folder's lock: another writer's temporary files are not stale.
    """
    removed = []
    for name in names:
        for p in sorted(Path(directory).glob(f".{glob.escape(name)}.*.tmp")):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


#: keys a run records about its data (compared when the checkpoint records them; older checkpoints lack them)
RECORDED_DATA_KEYS = ("data.file_bytes", "data.content_sha256")


def check_config_matches(
    path: str | Path, saved: dict, current: dict, keys: tuple[str, ...], *, optional: tuple[str, ...] = ()
) -> None:
    """Refuse a checkpoint whose config differs in any of ``keys`` (e.g. experiment, model, data; dotted keys
    such as ``data.system`` compare one entry), naming each difference. ``optional``: dotted keys compared
    only when the checkpoint records them (added by later versions)."""
    diffs = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if prefix in optional and a is None:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        elif (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b):
            diffs.append(f"{prefix}: checkpoint {a!r} vs now {b!r}")

    def get(d: Any, key: str) -> Any:
        for part in key.split("."):
            d = d.get(part) if isinstance(d, dict) else None
        return d

    for k in keys:
        walk(get(saved, k), get(current, k), k)
    if diffs:
        raise CheckpointError(f"checkpoint {path} was made with another configuration: " + "; ".join(diffs))


# ------------------------------------------------------------------------------------------------- writing
def _append_checksum(f: IO[bytes]) -> None:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(size - _EOCD, 0))
    eocd = f.read()
    if len(eocd) != _EOCD or eocd[:4] != _EOCD_SIG or eocd[-2:] != b"\0\0":
        raise CheckpointError("torch.save wrote an unexpected archive layout; cannot add the checksum")
    f.seek(size - 2)
    f.write(struct.pack("<H", _TRAILER))  # the comment length, covered by the digest
    f.seek(0)
    digest = _sha256(f, size)
    f.seek(size)
    f.write(_MAGIC + digest.encode("ascii"))


def _keep_as_previous(path: Path) -> None:
    """Make the current newest checkpoint the previous one, leaving ``path`` in place (hard link + rename)."""
    prev = previous_path(path)
    check_target(prev)
    link = temp_name(prev)
    try:
        os.link(path, link)
    except OSError:  # no hard links on this filesystem: the newest name is briefly absent
        os.replace(path, prev)
        return
    os.replace(link, prev)
    if os.path.lexists(link):  # prev was already this file (a hard link of it): rename is then a no-op
        os.unlink(link)


def _remove_regular(path: Path) -> None:
    """Remove ``path`` if it is a regular file (a link or folder of that name is refused, never followed)."""
    if check_target(path):
        path.unlink()


# ------------------------------------------------------------------------------------------------- reading
def _sha256(f: IO[bytes], n: int) -> str:
    """The hex sha256 of the next ``n`` bytes of ``f``."""
    h = hashlib.sha256()
    while n > 0:
        chunk = f.read(min(n, 1 << 20))
        if not chunk:
            break
        h.update(chunk)
        n -= len(chunk)
    return h.hexdigest()


def _checksum_ok(path: Path) -> bool | None:
    """True if the digest matches, False if it does not, None if the file has no checksum comment."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size < _EOCD + _TRAILER:
            return None
        f.seek(size - _TRAILER - _EOCD)
        tail = f.read()
        eocd, comment = tail[:_EOCD], tail[_EOCD:]
        if eocd[:4] != _EOCD_SIG or eocd[-2:] != struct.pack("<H", _TRAILER) or not comment.startswith(_MAGIC):
            return None
        f.seek(0)
        return _sha256(f, size - _TRAILER) == comment[len(_MAGIC) :].decode("ascii", errors="replace")


def _load_one(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise _Unusable(f"checkpoint {path} does not exist")
    ok = _checksum_ok(path)
    if ok is False:
        raise _Unusable(f"checkpoint {path} is corrupt: its sha256 checksum does not match (damaged or truncated)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        reason = str(e).split(". ")[0].strip() or type(e).__name__
        raise _Unusable(
            f"checkpoint {path} is corrupt (damaged, truncated) or not a physdiff checkpoint: {reason}"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise _Unusable(f"checkpoint {path} is corrupt or not a physdiff checkpoint (no model/step entries)")
    version = state.get("format_version", 0)
    if version < FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} comes from an older physdiff (checkpoint format {version}; this version reads "
            f"format {FORMAT_VERSION}, whose networks condition on the noise level log σ/α): its weights cannot "
            "be used; retrain the model in a new run folder (or delete the old checkpoints)"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} comes from a newer physdiff (format {version}; this version reads format "
            f"{FORMAT_VERSION}); upgrade physdiff"
        )
    if ok is None:
        raise _Unusable(f"checkpoint {path} is corrupt: its sha256 checksum comment is missing or damaged")
    return state
