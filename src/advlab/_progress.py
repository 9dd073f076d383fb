"""Progress bars: tqdm when it is installed (the ``cli`` extra), otherwise silent."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def progress(it: Iterable[T], *, enabled: bool = True, **kw: Any) -> Iterator[T]:
    """Wrap ``it`` in a tqdm bar on stderr when enabled, tqdm is importable and
    ``ADVLAB_PROGRESS`` is not ``0``."""
    if enabled and os.environ.get("ADVLAB_PROGRESS", "1") != "0":
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - core install without extras
            pass
        else:
            kw.setdefault("leave", False)
            kw.setdefault("dynamic_ncols", True)
            yield from tqdm(it, **kw)
            return
    yield from it
