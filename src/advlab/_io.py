"""The bottom layer: atomic files, JSON, config hashes and the on-disk store of results.

Every module that writes a file goes through :func:`atomic_open`: the bytes are written to a
temporary file in the target's own directory, flushed and fsynced, and only then renamed over the
target with :func:`os.replace` (atomic on POSIX and Windows). If anything fails on the way, the
temporary file is removed and the target is left exactly as it was: absent, or with its old
content. A reader therefore never sees a half-written CSV, JSON, PNG or HTML file.

Two JSON conversions, each for one purpose:

* :func:`to_jsonable` for result files: strict JSON (non-finite floats become ``null``), and
  anything it cannot convert raises;
* :func:`jsonable` for describing a configuration (``config.json`` and the cache keys of
  :func:`config_hash`): an attack keeps its ``name``, a callable is named, values it does not
  know are kept for ``json.dumps(default=str)``. Changing it changes every cache key.

:class:`Store` keeps computed results on disk under ``ROOT/KIND/HASH.json`` (or
``.safetensors`` for tensors), keyed by the hash of the configuration that produced them.

Example::

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = atomic_write_json(d / "result.json", {"accuracy": 99.05})
    >>> (d / "result.json").read_text()
    '{\\n  "accuracy": 99.05\\n}\\n'
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_open",
    "atomic_savefig",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "to_jsonable",
    "jsonable",
    "config_hash",
    "default_cache_dir",
    "state_to_bytes",
    "bytes_to_state",
    "Store",
]

log = logging.getLogger(__name__)

_NEW_FILE_MODE = 0o644


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str], mode: str = "w", *, encoding: str = "utf-8"
) -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` atomically when the block exits cleanly.

    ``mode`` is ``"w"`` (text, ``encoding``) or ``"wb"`` (bytes). Parent directories are created.
    If the block raises, the temporary file is deleted, ``path`` is untouched and the exception
    propagates. A new file gets mode 0644; an existing file keeps its permission bits.

    Example::

        with atomic_open("out/table.csv") as f:
            f.write("a,b\\n1,2\\n")
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot write a file over the directory {str(target)!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        file_mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        file_mode = _NEW_FILE_MODE
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        if mode == "wb":
            f = os.fdopen(fd, "wb")
        else:
            # newline="" keeps the caller's line endings byte for byte on every platform.
            f = os.fdopen(fd, "w", encoding=encoding, newline="")
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a :class:`~pathlib.Path`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8 by default); returns the path."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` to strict-JSON values.

    Handles dataclasses, mappings, sequences, sets (sorted), enums (their value), paths,
    numpy / torch scalars and arrays (via ``tolist``). Non-finite floats (nan, inf) become
    ``None``, because strict JSON has no spelling for them.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(v) for v in sorted(obj, key=repr)]
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays / scalars, torch tensors
        if hasattr(obj, "detach"):
            obj = obj.detach().cpu()
        return to_jsonable(obj.tolist())
    raise TypeError(f"cannot convert a {type(obj).__name__} to JSON: {obj!r}")


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, sort_keys: bool = False
) -> Path:
    """Write ``obj`` as strict JSON (see :func:`to_jsonable`) to ``path`` atomically.

    The whole document is serialised before the file is opened, so an object that cannot be
    converted raises without touching ``path``.
    """
    text = json.dumps(
        to_jsonable(obj), indent=indent, sort_keys=sort_keys, ensure_ascii=False, allow_nan=False
    )
    return atomic_write_text(path, text + "\n")


def atomic_savefig(
    fig: Any, path: str | os.PathLike[str], *, dpi: float = 150, **kwargs: Any
) -> Path:
    """Save a matplotlib figure to ``path`` atomically; the format follows the file suffix.

    ``kwargs`` go to :meth:`matplotlib.figure.Figure.savefig` (``bbox_inches`` is left unset by
    default so the image keeps its exact pixel size: ``figsize * dpi``).
    """
    target = Path(path)
    fmt = kwargs.pop("format", None) or target.suffix.lstrip(".").lower()
    if not fmt:
        raise ValueError(
            f"cannot tell the image format of {str(target)!r}: give it a suffix like .png"
        )
    with atomic_open(target, "wb") as f:
        fig.savefig(f, format=fmt, dpi=dpi, **kwargs)
    return target


def jsonable(obj: Any) -> Any:
    """A JSON-ready copy of configs (dataclasses, enums, tensors, paths)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        d = {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        name = getattr(obj, "name", None)
        if isinstance(name, str):
            d["name"] = name
        return d
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    torch = sys.modules.get("torch")  # a tensor means torch is loaded: no import here
    if torch is not None and isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "value") and hasattr(obj, "name") and not isinstance(obj, (int, float)):
        return obj.value  # enums
    if callable(obj):
        return getattr(obj, "__name__", repr(obj))
    return obj


def config_hash(*parts: Any) -> str:
    """A short stable hash of JSON-able config parts."""
    text = json.dumps([jsonable(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$ADVLAB_CACHE`` or ``~/.cache/advlab``."""
    return Path(os.environ.get("ADVLAB_CACHE", Path.home() / ".cache" / "advlab"))


def state_to_bytes(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """``tensors`` as safetensors bytes (detached, on the CPU, contiguous)."""
    from safetensors.torch import save

    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return save(clean, metadata=metadata)


def bytes_to_state(data: bytes, where: str, error: type[Exception] = ValueError
                   ) -> dict[str, Any]:
    """The tensors of safetensors ``data`` read from ``where``; ``error`` (a ValueError by
    default) naming ``where`` if the bytes do not parse. Nothing is ever unpickled."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, Exception) as e:  # noqa: BLE001 - any parse failure is a refusal
        raise error(f"{where} is not a valid safetensors file ({e}); advlab never "
                    f"unpickles checkpoints") from None


class Store:
    """Computed results on disk, keyed by the hash of the config that produced them.

    ``fmt="json"`` stores any JSON-able result as ``ROOT/KIND/HASH.json`` (with its config);
    ``fmt="safetensors"`` stores a dict of tensors as ``ROOT/KIND/HASH.safetensors`` (the
    config in its metadata). Files are written atomically, so a killed run resumes and a
    repeated one recomputes nothing; an unreadable entry is recomputed. ``calls`` counts the
    computations run, ``hits`` the results read back.
    """

    SUFFIX = {"json": ".json", "safetensors": ".safetensors"}

    def __init__(self, root: str | os.PathLike[str], fmt: str = "json") -> None:
        if fmt not in self.SUFFIX:
            raise ValueError(f"fmt must be one of {sorted(self.SUFFIX)}, got {fmt!r}")
        self.root = Path(root)
        self.fmt = fmt
        self.calls = 0
        self.hits = 0

    def path(self, kind: str, config: Any) -> Path:
        """Where the result of ``config`` under ``kind`` is (or would be) stored."""
        return self.root / kind / f"{config_hash(config)}{self.SUFFIX[self.fmt]}"

    def _read(self, p: Path) -> Any:
        if self.fmt == "json":
            return json.loads(p.read_text())["result"]
        return bytes_to_state(p.read_bytes(), str(p))

    def _write(self, p: Path, config: Any, result: Any) -> Any:
        if self.fmt == "json":
            atomic_write_json(p, {"config": jsonable(config), "result": jsonable(result)})
            return jsonable(result)
        atomic_write_bytes(p, state_to_bytes(result, {"config": json.dumps(jsonable(config),
                                                                             sort_keys=True)}))
        return result

    def get_or_compute(self, kind: str, config: Any, fn: Callable[[], Any]) -> Any:
        """The stored result of ``config`` under ``kind``, computing it with ``fn`` once."""
        p = self.path(kind, config)
        if p.is_file():
            try:
                out = self._read(p)
                self.hits += 1
                return out
            except (json.JSONDecodeError, KeyError, ValueError):
                log.warning("ignoring unreadable cache entry %s", p)
        result = fn()
        self.calls += 1
        return self._write(p, config, result)
