"""Result tables rendered as CSV, Markdown, HTML and JSON from one formatting function.

A :class:`Table` holds raw values (numbers stay numbers). Every text rendering goes through
:func:`format_value`, so the number printed in the Markdown is the number printed in the CSV and
the HTML, and the JSON carries both the raw value and that same text. A cell can carry a mark,
e.g. the ``*`` that flags white-box entries in Dong et al. (CVPR 2018), Table 1, via
:class:`Cell`.

Example::

    >>> t = Table(
    ...     title="FGSM on MNIST (eps = 0.35)",
    ...     columns=["model", "clean %", "FGSM %"],
    ...     rows=[["Basic-CNN", 99.05, 8.47], ["ConvNet", 98.9, Cell(15.07, "*")]],
    ...     notes="* = white-box",
    ... )
    >>> print(t.to_markdown())
    **FGSM on MNIST (eps = 0.35)**
    <BLANKLINE>
    | model | clean % | FGSM % |
    | --- | ---: | ---: |
    | Basic-CNN | 99.05 | 8.47 |
    | ConvNet | 98.90 | 15.07\\* |
    <BLANKLINE>
    \\* = white-box
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advlab._io import atomic_write_json, atomic_write_text, to_jsonable

__all__ = ["Cell", "Estimate", "Table", "escape_markdown", "format_value"]

DEFAULT_FLOAT_FORMAT = ".2f"


@dataclass(frozen=True)
class Cell:
    """A table value with a mark appended to its text (``Cell(100.0, "*")`` -> ``100.00*``).

    The mark is part of the rendered text only; JSON keeps the raw ``value`` and the mark apart.
    """

    value: Any
    mark: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.value, Cell):
            raise TypeError("a Cell cannot hold another Cell")
        if not isinstance(self.mark, str):
            raise TypeError(f"Cell mark must be a str, got {type(self.mark).__name__}")


@dataclass(frozen=True)
class Estimate:
    """A rate (or any estimate) with its confidence interval: shown as ``"71.6 [68.7, 74.4]"``
    in Markdown and HTML; the CSV gives the bounds their own columns (``"<column> lo"``,
    ``"<column> hi"``) and the JSON keeps them in ``intervals``. ``mark`` as in :class:`Cell`.

    Example::

        >>> format_value(Estimate(71.62, 68.71, 74.39, "*"), ".1f")
        '71.6 [68.7, 74.4]*'
    """

    value: float
    lo: float
    hi: float
    mark: str = ""

    def __post_init__(self) -> None:
        for name in ("value", "lo", "hi"):
            if not _is_number(getattr(self, name)):
                raise TypeError(f"Estimate.{name} must be a number, got "
                                f"{getattr(self, name)!r}")
        if not isinstance(self.mark, str):
            raise TypeError(f"Estimate mark must be a str, got {type(self.mark).__name__}")


def _plain(value: Any) -> Any:
    """Unwrap numpy / torch scalars to Python numbers; leave everything else alone."""
    if isinstance(value, Cell):
        return Cell(_plain(value.value), value.mark)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def format_value(value: Any, spec: str | None = None) -> str:
    """The one text rendering of a table value, shared by CSV, Markdown and HTML.

    * ``None`` -> ``""``; ``True`` / ``False`` -> ``"yes"`` / ``"no"``; strings unchanged.
    * floats use ``spec`` (default ``".2f"``): ``format_value(8.4712) == "8.47"``;
      nan / inf print as ``"nan"`` / ``"inf"`` / ``"-inf"``, and ``-0.00`` prints as ``0.00``.
    * integers print exactly unless ``spec`` is given: ``format_value(10) == "10"``.
    * a :class:`Cell` prints its value followed by its mark.

    Percentages are passed already as numbers (``99.05``, not ``0.9905``).
    """
    if isinstance(value, Cell):
        return format_value(value.value, spec) + value.mark
    if isinstance(value, Estimate):
        return (f"{format_value(float(value.value), spec)} [{format_value(float(value.lo), spec)}"
                f", {format_value(float(value.hi), spec)}]{value.mark}")
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if _is_number(value):
        if isinstance(value, numbers.Integral) and spec is None:
            return str(int(value))
        number = float(value) if not isinstance(value, numbers.Integral) else value
        if isinstance(number, float) and not math.isfinite(number):
            return "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")
        try:
            text = format(number, spec if spec is not None else DEFAULT_FLOAT_FORMAT)
        except ValueError as err:
            raise ValueError(f"format spec {spec!r} cannot format the value {value!r}") from err
        # "-0.00" after rounding a tiny negative number reads as a sign error; drop the sign.
        if text.startswith("-") and not re.search(r"[1-9]", text):
            text = text[1:]
        return text
    return str(value)


_MD_INLINE = re.compile(r"([\\`*_\[\]<>|~])")
# Block markers that only act at the start of a line: headings, list items, setext / thematic
# break lines ("---", "==="). "-0.5" or "99.05" are left alone.
_MD_LINE_START = re.compile(r"^(\s*)(?:([#+-]|\d+[.)])(?=\s|$)|([=-])(?=[\s=-]*$))")


def escape_markdown(text: str, *, block: bool = True) -> str:
    """Backslash-escape ``text`` so Markdown shows it literally: emphasis, code, links, pipes and
    HTML tags everywhere, plus (when ``block``) headings / list markers at the start of a line.
    Newlines are kept. Table cells use ``block=False``: line-start markers mean nothing there.

    Example::

        >>> print(escape_markdown("*white-box* | 1. x_adv"))
        \\*white-box\\* \\| 1. x\\_adv
        >>> print(escape_markdown("1. first"))
        1\\. first
    """
    out = []
    for line in str(text).split("\n"):
        line = _MD_INLINE.sub(r"\\\1", line)
        m = _MD_LINE_START.match(line) if block else None
        if m:
            marker = m.group(2) or m.group(3)
            if marker[0].isdigit():
                marker = marker[:-1] + "\\" + marker[-1]
            else:
                marker = "\\" + marker
            line = m.group(1) + marker + line[m.end() :]
        out.append(line)
    return "\n".join(out)


def _md_cell(text: str) -> str:
    cell = escape_markdown(text, block=False).replace("\r\n", "\n").replace("\n", "<br>")
    return cell if cell.strip() else " "


@dataclass(frozen=True)
class Table:
    """A titled table of raw values, rendered consistently as CSV, Markdown, HTML and JSON.

    Args:
        title: shown above the table (Markdown: bold line; HTML: ``<caption>``).
        columns: column names, unique.
        rows: one list per row, each as long as ``columns``; values are numbers, strings, None,
            booleans or :class:`Cell`. numpy / torch scalars are unwrapped to Python numbers.
        notes: a paragraph shown under the table (e.g. ``"* = white-box"``).
        formats: optional per-column format spec, e.g. ``{"eps": ".3f", "n": "d"}``.
        float_format: format spec for floats in the other columns (default ``".2f"``).

    The rows are copied, so later changes to the caller's lists do not leak in.

    Example::

        >>> t = Table("Accuracy", ["model", "acc %"], [["CNN", 99.046]], formats={"acc %": ".1f"})
        >>> t.formatted_rows()
        [['CNN', '99.0']]
    """

    title: str
    columns: list[str]
    rows: list[list[Any]]
    notes: str = ""
    formats: Mapping[str, str] = field(default_factory=dict)
    float_format: str = DEFAULT_FLOAT_FORMAT

    def __post_init__(self) -> None:
        if not isinstance(self.title, str):
            raise TypeError(f"title must be a str, got {type(self.title).__name__}")
        if not isinstance(self.notes, str):
            raise TypeError(f"notes must be a str, got {type(self.notes).__name__}")
        if isinstance(self.columns, str) or not isinstance(self.columns, Sequence):
            raise TypeError(f"columns must be a list of str, got {self.columns!r}")
        columns = list(self.columns)
        if not columns:
            raise ValueError("a table needs at least one column, got columns=[]")
        for c in columns:
            if not isinstance(c, str):
                raise TypeError(f"column names must be str, got {c!r}")
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        if dupes:
            raise ValueError(f"column names must be unique, got duplicates {dupes}")
        if isinstance(self.rows, (str, bytes)) or not isinstance(self.rows, Sequence):
            raise TypeError(f"rows must be a list of lists, got {type(self.rows).__name__}")
        rows = []
        for i, row in enumerate(self.rows):
            if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
                raise TypeError(f"row {i} must be a list, got {type(row).__name__}")
            if len(row) != len(columns):
                raise ValueError(
                    f"row {i} has {len(row)} values but the table has {len(columns)} columns "
                    f"{columns}"
                )
            rows.append([_plain(v) for v in row])
        formats = dict(self.formats or {})
        unknown = sorted(set(formats) - set(columns))
        if unknown:
            raise ValueError(f"formats name unknown columns {unknown}; columns are {columns}")
        for col, spec in formats.items():
            if not isinstance(spec, str):
                raise TypeError(f"format for column {col!r} must be a str spec, got {spec!r}")
        if not isinstance(self.float_format, str):
            raise TypeError(f"float_format must be a str spec, got {self.float_format!r}")
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "formats", formats)
        # Fail here, at construction, if a format spec does not fit a value.
        self.formatted_rows()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_records(
        cls,
        records: Sequence[Mapping[str, Any] | Any],
        columns: Sequence[str] | None = None,
        title: str = "",
        *,
        notes: str = "",
        formats: Mapping[str, str] | None = None,
        float_format: str = DEFAULT_FLOAT_FORMAT,
    ) -> Table:
        """Build a table from dicts (or dataclass instances), one per row.

        ``columns`` picks and orders the fields; by default every key, in first-seen order.
        Missing keys become empty cells.

        Example::

            >>> Table.from_records([{"model": "CNN", "acc": 99.1}, {"model": "MLP"}]).rows
            [['CNN', 99.1], ['MLP', None]]
        """
        dicts = []
        for i, rec in enumerate(records):
            if dataclasses.is_dataclass(rec) and not isinstance(rec, type):
                rec = {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}
            if not isinstance(rec, Mapping):
                raise TypeError(
                    f"record {i} must be a dict or a dataclass, got {type(rec).__name__}"
                )
            dicts.append(rec)
        if columns is None:
            if not dicts:
                raise ValueError("from_records needs columns=... when records is empty")
            seen: dict[str, None] = {}
            for rec in dicts:
                for k in rec:
                    seen.setdefault(str(k), None)
            columns = list(seen)
        columns = list(columns)
        rows = [[rec.get(c) for c in columns] for rec in dicts]
        return cls(
            title=title,
            columns=columns,
            rows=rows,
            notes=notes,
            formats=dict(formats or {}),
            float_format=float_format,
        )

    # ------------------------------------------------------------------ formatting
    def spec_for(self, column: str) -> str | None:
        """The format spec used for floats (and, if given per column, ints) of ``column``."""
        return self.formats.get(column)

    def _format(self, column: str, value: Any) -> str:
        spec = self.formats.get(column)
        raw = value.value if isinstance(value, (Cell, Estimate)) else value
        if isinstance(value, Estimate) and spec is None:
            raw = float(raw)
        if spec is None and isinstance(raw, float):
            spec = self.float_format
        try:
            return format_value(value, spec)
        except ValueError as err:
            raise ValueError(f"column {column!r}: {err}") from None

    def formatted_rows(self) -> list[list[str]]:
        """Every cell as the text that CSV, Markdown and HTML show (marks included)."""
        return [[self._format(c, v) for c, v in zip(self.columns, row)] for row in self.rows]

    def numeric_columns(self) -> list[bool]:
        """Per column: True when every non-empty value is a number (right-aligned)."""
        out = []
        for j in range(len(self.columns)):
            values = [r[j].value if isinstance(r[j], (Cell, Estimate)) else r[j]
                      for r in self.rows]
            values = [v for v in values if v is not None]
            out.append(bool(values) and all(_is_number(v) for v in values))
        return out

    # ------------------------------------------------------------------ renderers
    def interval_columns(self) -> list[bool]:
        """Per column: True when some value is an :class:`Estimate` (its CSV has bounds)."""
        return [any(isinstance(r[j], Estimate) for r in self.rows)
                for j in range(len(self.columns))]

    def to_csv_text(self) -> str:
        """Header plus formatted rows as CSV text (``\\n`` line endings). A column holding
        :class:`Estimate` values is followed by ``"<column> lo"`` and ``"<column> hi"``, and
        its own cells hold the estimate alone (mark included)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        bounds = self.interval_columns()
        header: list[str] = []
        for c, b in zip(self.columns, bounds):
            header += [c, f"{c} lo", f"{c} hi"] if b else [c]
        writer.writerow(header)
        for raw_row, text_row in zip(self.rows, self.formatted_rows()):
            out: list[str] = []
            for c, b, raw, text in zip(self.columns, bounds, raw_row, text_row):
                if not b:
                    out.append(text)
                elif isinstance(raw, Estimate):
                    out += [self._format(c, Cell(float(raw.value), raw.mark)),
                            self._format(c, float(raw.lo)), self._format(c, float(raw.hi))]
                else:
                    out += [text, "", ""]
            writer.writerow(out)
        return buf.getvalue()

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_csv_text` to ``path`` atomically; returns the path.

        The CSV holds the same formatted text as the Markdown and HTML (title and notes are not
        part of a CSV; they are in :meth:`to_json_obj`).
        """
        return atomic_write_text(path, self.to_csv_text())

    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown: bold title, the table (numbers right-aligned), notes."""
        numeric = self.numeric_columns()
        lines = []
        if self.title:
            lines += [f"**{escape_markdown(self.title)}**", ""]
        lines.append("| " + " | ".join(_md_cell(c) for c in self.columns) + " |")
        lines.append("| " + " | ".join("---:" if n else "---" for n in numeric) + " |")
        for row in self.formatted_rows():
            lines.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
        if self.notes:
            lines += ["", escape_markdown(self.notes)]
        return "\n".join(lines)

    def to_html(self, *, table_id: str | None = None) -> str:
        """An HTML fragment: the title, a ``<table>`` with header and body, then the notes.

        Every piece of text is HTML-escaped. Number columns get ``class="num"``; a mark is
        wrapped in ``<span class="mark">`` (the cell's text is unchanged).
        """
        esc = html.escape
        numeric = self.numeric_columns()
        id_attr = f' id="{esc(table_id)}"' if table_id else ""
        out = [f'<div class="table-block"{id_attr}>']
        # The title sits above the table rather than in a <caption>, which browsers squeeze to
        # the table's width; aria-label keeps it attached to the table for screen readers.
        label = ""
        if self.title:
            out.append(f'<p class="table-title">{esc(self.title)}</p>')
            label = f' aria-label="{esc(self.title)}"'
        out += ['<div class="table-scroll">', f"<table{label}>"]
        out.append("<thead><tr>")
        for name, num in zip(self.columns, numeric):
            cls = ' class="num"' if num else ""
            out.append(f'<th scope="col"{cls}>{esc(name)}</th>')
        out.append("</tr></thead>")
        out.append("<tbody>")
        for raw_row, text_row in zip(self.rows, self.formatted_rows()):
            cells = []
            for raw, text, num in zip(raw_row, text_row, numeric):
                classes = ["num"] if num else []
                mark = raw.mark if isinstance(raw, (Cell, Estimate)) else ""
                if mark and text.endswith(mark):
                    classes.append("marked")
                    body = f'{esc(text[: -len(mark)])}<span class="mark">{esc(mark)}</span>'
                else:
                    body = esc(text)
                cls = f' class="{" ".join(classes)}"' if classes else ""
                cells.append(f"<td{cls}>{body}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody>")
        out.append("</table>")
        out.append("</div>")
        if self.notes:
            out.append(f'<p class="table-notes">{esc(self.notes)}</p>')
        out.append("</div>")
        return "\n".join(out)

    def to_json_obj(self) -> dict[str, Any]:
        """A JSON-ready dict with the raw values *and* the formatted text.

        Keys: ``title``, ``columns``, ``notes``, ``formats``, ``float_format``, ``rows`` (raw
        values; nan / inf become null), ``formatted`` (the exact text of the Markdown / CSV /
        HTML cells, marks included), ``marks`` (the mark of each cell, ``""`` if none) and
        ``intervals`` (``[lo, hi]`` of each :class:`Estimate`, else null).
        """
        raw = [[v.value if isinstance(v, (Cell, Estimate)) else v for v in row]
               for row in self.rows]
        marks = [[v.mark if isinstance(v, (Cell, Estimate)) else "" for v in row]
                 for row in self.rows]
        intervals = [[[v.lo, v.hi] if isinstance(v, Estimate) else None for v in row]
                     for row in self.rows]
        return {
            "title": self.title,
            "columns": list(self.columns),
            "notes": self.notes,
            "formats": dict(self.formats),
            "float_format": self.float_format,
            "rows": to_jsonable(raw),
            "formatted": self.formatted_rows(),
            "marks": marks,
            "intervals": to_jsonable(intervals),
        }

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json_obj` to ``path`` atomically; returns the path."""
        return atomic_write_json(path, self.to_json_obj())
