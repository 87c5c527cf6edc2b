"""The one place through which physdiff writes files.

Every file physdiff writes (results.json, table.md, report.html, config.yaml, scaling.json, the CSV logs,
samples and data HDF5 files, checkpoints, the run lock) goes through this module, which

* refuses a target that is a symbolic link or not a regular file (``lstat``; ``O_NOFOLLOW`` for files
  opened in place), so a link in a run folder never makes physdiff write where it points;
* writes atomically: a temporary file in the same folder (created with ``O_EXCL | O_NOFOLLOW``), fsynced,
  renamed over the target, the folder fsynced; on any error the temporary file is removed and the previous
  file is left as it was;
* creates files with the user's umask (mode ``0o666 & ~umask``: 0644 under umask 022), not mkstemp's 0600;
* names the file in every OS error: :class:`WriteError` (an :class:`OSError`, which the CLI prints as one
  line with exit status 2), e.g. ``cannot write runs/a/results.json: No space left on device``.

:func:`check_new_output` is the ``--force`` rule of every verb: an output that exists is refused without
``force``, and ``force`` replaces only a regular file. :func:`record_outputs` / :func:`recorded_outputs` keep a
run folder's manifest (``.physdiff-manifest.json``): the names of the files physdiff wrote there, which is
all that ``--force`` may delete.

Importable by every layer (it imports nothing of physdiff).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "MANIFEST",
    "AppendHandler",
    "WriteError",
    "atomic_open",
    "atomic_path",
    "check_new_output",
    "check_target",
    "open_append",
    "open_regular",
    "os_reason",
    "read_json",
    "record_outputs",
    "recorded_outputs",
    "remove_recorded",
    "write_json",
    "write_text",
]

#: a run folder's list of the files physdiff wrote in it (relative names)
MANIFEST = ".physdiff-manifest.json"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class WriteError(OSError):
    """A file could not be written; the message names it (and says why: no space, read-only, permission,
    a symbolic link or a non-regular file at the target)."""

    def __init__(self, path: str | os.PathLike[str], reason: str, code: int | None = None) -> None:
        super().__init__(code or errno.EIO, f"cannot write {os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason

    def __str__(self) -> str:
        return str(self.strerror)


def os_reason(e: OSError) -> str:
    """Why an OS call failed, in one line: the system's text for its errno (``No space left on device``),
    else its first line (HDF5's messages run over several lines and name the temporary file)."""
    if isinstance(e.errno, int) and e.errno > 0:
        return os.strerror(e.errno)
    text = e.strerror or str(e) or type(e).__name__
    return " ".join(str(text).split("\n")[0].split()) or type(e).__name__


_reason = os_reason


def check_target(path: str | os.PathLike[str]) -> bool:
    """Refuse (:class:`WriteError`) a target that is a symbolic link or exists and is not a regular file;
    returns whether a regular file exists there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise WriteError(path, _reason(e), e.errno) from None
    if stat.S_ISLNK(st.st_mode):
        raise WriteError(path, "it is a symbolic link; physdiff does not write through links", errno.ELOOP)
    if not stat.S_ISREG(st.st_mode):
        raise WriteError(path, "it exists and is not a regular file", errno.EEXIST)
    return True


def check_new_output(path: str | os.PathLike[str], option: str, *, force: bool) -> Path:
    """An output file of a verb: refused when it exists unless ``force``, and ``force`` replaces only a
    regular file (never a link, a folder or a device)."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as e:
        raise WriteError(path, _reason(e), e.errno) from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{option} {path} is a folder; give a file name (e.g. {path / 'out.h5'})")
    if not stat.S_ISREG(st.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise ValueError(f"{option} {path} is {what}; physdiff replaces only regular files, even with --force")
    if not force:
        raise ValueError(f"{option} {path} exists; pass --force to replace it (or name another file)")
    return path


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WriteError(folder, "a file is in the way of this folder", errno.ENOTDIR) from None
    except OSError as e:
        raise WriteError(folder, _reason(e), e.errno) from None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | _O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: str | os.PathLike[str]) -> Path:
    """The name of a temporary file for ``path`` (``.<name>.<random>.tmp`` in the same folder)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield the path of a new, empty temporary file beside ``path``; when the block completes it is fsynced
    and renamed to ``path`` (a symbolic link or non-regular file there is refused before and after the
    block). On any error the temporary file is removed and ``path`` keeps its previous content; OS errors
    become :class:`WriteError` naming ``path``.

    For writers that need a file name (h5py, torch.save); :func:`atomic_open` wraps it for file objects.
    """
    path = Path(path)
    check_target(path)
    _mkdir(path.parent)
    tmp = temp_name(path)
    try:
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o666))
            yield tmp
            _fsync_path(str(tmp))
            check_target(path)
            os.replace(tmp, path)
        except WriteError:
            raise
        except OSError as e:
            raise WriteError(path, _reason(e), e.errno) from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:  # renamed into place (or never created)
            pass
    _fsync_dir(path.parent)


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """``open(path, mode)`` (``"w"`` or ``"wb"``) through :func:`atomic_path`: ``path`` is replaced only when
    the block completes."""
    if mode not in ("w", "wb", "w+b"):
        raise ValueError(f"atomic_open writes a new file: mode 'w' or 'wb', not {mode!r}")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp:
        try:
            with open(tmp, mode, **kwargs) as f:
                yield f
        except OSError as e:
            if isinstance(e, WriteError):
                raise
            raise WriteError(path, _reason(e), e.errno) from None


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (serialised before the file is touched)."""
    return write_text(path, json.dumps(obj, indent=indent))


def open_regular(path: str | os.PathLike[str], flags: int, mode: int = 0o666) -> int:
    """``os.open`` of a file written in place (a lock, an append-only log): never through a symbolic link
    (``O_NOFOLLOW``), only a regular file; returns the descriptor. OS errors name the file."""
    check_target(path)
    if flags & os.O_CREAT:
        _mkdir(Path(path).parent)
    try:
        fd = os.open(path, flags | _O_NOFOLLOW | _O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise WriteError(path, "it is a symbolic link; physdiff does not write through links", e.errno) from None
        raise WriteError(path, _reason(e), e.errno) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise WriteError(path, "it exists and is not a regular file", errno.EEXIST)
    return fd


def open_append(path: str | os.PathLike[str], *, newline: str | None = None) -> IO[str]:
    """A text file opened for appending (created with the umask), refusing links and non-regular files."""
    fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    return os.fdopen(fd, "a", encoding="utf-8", newline=newline)


class AppendHandler(logging.FileHandler):
    """A :class:`logging.FileHandler` (a run's ``run.log``) that appends through :func:`open_append`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.stream = self._open()  # opened now, so a link or an unwritable folder is refused at once

    def _open(self) -> IO[str]:
        return open_append(self.baseFilename)


def read_json(path: str | os.PathLike[str], *, max_depth: int = 64) -> Any:
    """A JSON file physdiff wrote (results.json, sweep.json, scaling.json), read with one clear
    :class:`ValueError` naming the file for invalid or too deeply nested JSON (not a RecursionError)."""
    text = Path(path).read_text(encoding="utf-8")
    depth = level = 0
    in_string = escaped = False
    for ch in text:  # the nesting depth, before the parser recurses
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            level += 1
            depth = max(depth, level)
        elif ch in "]}":
            level -= 1
    if depth > max_depth:
        raise ValueError(f"{path}: the JSON is nested {depth} levels deep (at most {max_depth}); not a physdiff file")
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


# ------------------------------------------------------------------------------------------- manifests
def recorded_outputs(folder: str | os.PathLike[str]) -> list[str] | None:
    """The names recorded in ``folder``'s manifest (``None`` when it has none)."""
    p = Path(folder) / MANIFEST
    if not p.is_file() or p.is_symlink():
        return None
    try:
        names = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(names, list):
        return None
    return [n for n in names if isinstance(n, str) and _safe_name(n)]


def _safe_name(name: str) -> bool:
    """A relative name inside the folder (no absolute path, no ``..``)."""
    p = Path(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts


def record_outputs(folder: str | os.PathLike[str], names: Iterable[str | os.PathLike[str]]) -> None:
    """Add ``names`` (paths inside ``folder`` or relative names) to ``folder``'s manifest."""
    folder = Path(folder)
    old = recorded_outputs(folder) or []
    new = list(old)
    for n in names:
        p = Path(n)
        rel = os.path.relpath(p, folder) if p.is_absolute() or str(p).startswith(str(folder)) else str(p)
        if _safe_name(rel) and rel not in new:
            new.append(rel)
    if new != old or not (folder / MANIFEST).is_file():
        write_json(folder / MANIFEST, new, indent=None)


def remove_recorded(folder: str | os.PathLike[str], fallback: Iterable[str] = ()) -> list[Path]:
    """Delete the regular files recorded in ``folder``'s manifest (or, for a folder written before
    manifests, the exact names of ``fallback``), then the manifest; folders emptied by it are removed.
    Nothing else is touched: links, folders and files physdiff did not write stay. Returns what was removed."""
    folder = Path(folder)
    names = recorded_outputs(folder)
    if names is None:
        names = list(fallback)
    removed = []
    for name in [*names, MANIFEST]:
        p = folder / name
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            try:
                p.unlink()
            except OSError as e:
                raise WriteError(p, f"cannot remove it: {_reason(e)}", e.errno) from None
            removed.append(p)
            parent = p.parent
            while parent != folder and folder in parent.parents:
                try:
                    parent.rmdir()  # only when empty
                except OSError:
                    break
                parent = parent.parent
    return removed
