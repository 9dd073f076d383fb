"""The report layer: results (plain data) -> CSV / JSON tables, PNG figures, one static page.

The last stage of data -> model -> attack -> evaluation -> results -> report. Evaluation returns
dataclasses and lists of rows; this package turns them into files, each written atomically.

* :class:`Table` / :class:`Cell` (``tables``): CSV, Markdown, HTML and JSON from one formatter.
* ``bar_chart``, ``line_plot``, ``multi_line_grid``, ``image_grid`` (``figures``): matplotlib
  PNGs (needs the ``cli`` extra; imported on first use).
* :class:`Report` (``html``): ``report.md`` plus a self-contained ``report.html``.
* ``atomic_write_text`` / ``_bytes`` / ``_json``, ``atomic_savefig`` (``io``).

Example::

    from advlab.report import Report, Table, bar_chart

    t = Table("FGSM, eps = 0.35", ["model", "clean %", "FGSM %"], [["Basic-CNN", 99.05, 8.47]])
    png = bar_chart(["Basic-CNN"], {"clean": [99.05], "FGSM": [8.47]}, "out/acc.png",
                    title="Accuracy under FGSM", ylabel="accuracy", percent=True)
    Report("VOneNet-FGSM").add_table(t).add_figure(png, "Clean vs FGSM accuracy").write("out")
"""

from __future__ import annotations

from typing import Any

from advlab._io import (
    atomic_open,
    atomic_savefig,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    to_jsonable,
)

from .html import Report
from .tables import Cell, Estimate, Table, escape_markdown, format_value

_FIGURES = ("bar_chart", "line_plot", "multi_line_grid", "image_grid")

__all__ = [
    "Cell",
    "Estimate",
    "Report",
    "Table",
    "atomic_open",
    "atomic_savefig",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "bar_chart",
    "escape_markdown",
    "format_value",
    "image_grid",
    "line_plot",
    "multi_line_grid",
    "to_jsonable",
]


def __getattr__(name: str) -> Any:
    # matplotlib is an optional dependency: import the figure module only when asked for.
    if name in _FIGURES:
        from . import figures

        return getattr(figures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FIGURES))
