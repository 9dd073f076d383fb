"""A report builder that writes one Markdown file and one static, self-contained HTML page.

The HTML page has inline CSS, no JavaScript and no external resources: it opens from disk in any
browser, offline. Figures are referenced by a relative path (``<img src="acc.png">``) so the
report directory can be moved or zipped as a whole, or, with ``embed=True``, inlined as base64
data URIs so the single HTML file carries everything.

Example::

    >>> import tempfile
    >>> from advlab.report.tables import Table
    >>> out = tempfile.mkdtemp()
    >>> r = Report("MNIST robustness")
    >>> _ = r.add_paragraph("FGSM at eps = 0.35, true labels, eval mode.")
    >>> _ = r.add_table(Table("Accuracy", ["model", "clean %"], [["Basic-CNN", 99.05]]))
    >>> r.write(out)
    []
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from advlab._io import atomic_write_bytes, atomic_write_text

from .. import __version__
from .tables import Table, escape_markdown

__all__ = ["Report"]

_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body {
  margin: 0; background: #ffffff; color: #1f2328;
  font: 16px/1.55 -apple-system, "Segoe UI", "Helvetica Neue", Helvetica, Arial,
        "Noto Sans", "DejaVu Sans", sans-serif;
}
main { max-width: 980px; margin: 0 auto; padding: 32px 28px 48px; }
h1, h2, h3, h4, h5, h6 { line-height: 1.25; margin: 1.6em 0 0.6em; font-weight: 600; }
h1 { font-size: 2em; margin-top: 0.2em; padding-bottom: 0.3em; border-bottom: 1px solid #d0d7de; }
h2 { font-size: 1.5em; padding-bottom: 0.25em; border-bottom: 1px solid #d8dee4; }
h3 { font-size: 1.25em; }
p { margin: 0 0 1em; white-space: pre-line; }
p.subtitle { color: #57606a; font-size: 1.05em; }
.table-block { margin: 1.2em 0 1.6em; }
.table-scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.92em; }
p.table-title { font-weight: 600; margin: 0 0 0.45em; }
th, td { border: 1px solid #d0d7de; padding: 5px 12px; text-align: left; vertical-align: top; }
thead th { background: #eef1f4; font-weight: 600; }
tbody tr:nth-child(even) { background: #f6f8fa; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.mark { color: #8250df; font-weight: 600; }
p.table-notes { color: #57606a; font-size: 0.88em; margin: 0.5em 0 0; }
figure { margin: 1.4em 0 1.8em; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid #d8dee4; border-radius: 4px; }
figcaption { color: #57606a; font-size: 0.9em; margin-top: 0.45em; }
figcaption .figno { font-weight: 600; color: #1f2328; }
pre { background: #f6f8fa; border: 1px solid #d8dee4; border-radius: 6px; padding: 12px 14px;
      overflow-x: auto; font-size: 0.86em; line-height: 1.45; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono",
       monospace; }
footer { margin-top: 3em; padding-top: 0.8em; border-top: 1px solid #d8dee4; color: #8c959f;
         font-size: 0.8em; }
"""


@dataclass(frozen=True)
class _Heading:
    text: str
    level: int


@dataclass(frozen=True)
class _Paragraph:
    text: str


@dataclass(frozen=True)
class _TableBlock:
    table: Table


@dataclass(frozen=True)
class _Figure:
    path: Path
    caption: str


@dataclass(frozen=True)
class _Code:
    text: str
    language: str


def _png_css_width(data: bytes) -> int | None:
    """The width in CSS pixels (96 per inch) at which a PNG shows at its physical size, read
    from its IHDR and pHYs chunks; None when the file is not a PNG or has no dpi above 96.

    A 6.4 in figure saved at 150 dpi is 960 px wide but shows at 614 CSS px: its text then has
    the point size it was drawn with, and HiDPI screens get the extra pixels for sharpness.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 33:
        return None
    width = int.from_bytes(data[16:20], "big")
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"pHYs" and length == 9:
            ppu = int.from_bytes(data[pos + 8 : pos + 12], "big")
            unit = data[pos + 16]
            dpi = ppu * 0.0254 if unit == 1 else 0.0
            return round(width * 96 / dpi) if dpi > 96.5 else None
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, k = base, 2
    while slug in used:
        slug, k = f"{base}-{k}", k + 1
    used.add(slug)
    return slug


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


class Report:
    """Collects headings, paragraphs, tables, figures and code, then writes ``.md`` and ``.html``.

    Every ``add_*`` method returns the report, so calls chain. Text is always shown literally:
    it is HTML-escaped in the page and backslash-escaped in the Markdown.

    Example::

        report = Report("VOneNet-FGSM, re-evaluated", subtitle="MNIST, eps = 0.35")
        report.add_heading("Accuracy").add_table(table).add_figure("acc.png", "Clean vs FGSM")
        figures = report.write("runs/vone")   # runs/vone/report.md and runs/vone/report.html
    """

    def __init__(self, title: str, *, subtitle: str = "") -> None:
        if not isinstance(title, str) or not title.strip():
            raise ValueError(f"title must be a non-empty str, got {title!r}")
        if not isinstance(subtitle, str):
            raise TypeError(f"subtitle must be a str, got {type(subtitle).__name__}")
        self.title = title
        self.subtitle = subtitle
        self._blocks: list[_Heading | _Paragraph | _TableBlock | _Figure | _Code] = []

    # ------------------------------------------------------------------ building
    def add_heading(self, text: str, level: int = 2) -> Report:
        """A section heading; ``level`` 1..6 (the report title is the only level-1 by default)."""
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 6:
            raise ValueError(f"heading level must be an int in 1..6, got {level!r}")
        self._blocks.append(_Heading(_text(text, "heading"), level))
        return self

    def add_paragraph(self, text: str) -> Report:
        """A paragraph of plain text (escaped; line breaks are kept)."""
        self._blocks.append(_Paragraph(_text(text, "paragraph")))
        return self

    def add_table(self, table: Table) -> Report:
        """A :class:`~advlab.report.tables.Table` (its Markdown and HTML renderings)."""
        if not isinstance(table, Table):
            raise TypeError(f"add_table expects a Table, got {type(table).__name__}")
        self._blocks.append(_TableBlock(table))
        return self

    def add_figure(self, path: str | os.PathLike[str], caption: str = "") -> Report:
        """An image file with a caption. The file must exist when :meth:`write` runs."""
        self._blocks.append(_Figure(Path(path), _text(caption, "caption")))
        return self

    def add_code(self, text: str, language: str = "") -> Report:
        """A preformatted block (a config, a command line, a log excerpt)."""
        if not isinstance(language, str) or not re.fullmatch(r"[\w+.-]*", language):
            raise ValueError(f"language must be a bare word like 'yaml', got {language!r}")
        self._blocks.append(_Code(_text(text, "code"), language))
        return self

    @property
    def tables(self) -> list[Table]:
        """The tables added so far, in order."""
        return [b.table for b in self._blocks if isinstance(b, _TableBlock)]

    @property
    def figures(self) -> list[Path]:
        """The figure paths added so far, in order (as given)."""
        return [b.path for b in self._blocks if isinstance(b, _Figure)]

    # ------------------------------------------------------------------ rendering
    def _place_figures(self, out_dir: Path) -> list[Path]:
        """Where each figure lives for the report: inside ``out_dir`` as is; from elsewhere,
        copied to ``out_dir/figures/<name>`` (``<stem>_2`` etc. when two different figures
        share a name), so the report directory is self-contained. Re-writing a report
        overwrites its own copies rather than piling up new names."""
        missing = [str(p) for p in self.figures if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"figure files not found: {missing}")
        out_abs = out_dir.resolve()
        copies: dict[Path, Path] = {}
        # Figures already inside out_dir are never overwritten by a copy.
        taken = {p.resolve() for p in self.figures if p.resolve().is_relative_to(out_abs)}
        placed: list[Path] = []
        for src in self.figures:
            src_abs = src.resolve()
            if src_abs in taken:
                placed.append(src_abs)
                continue
            if src_abs not in copies:
                dst, k = out_abs / "figures" / src.name, 2
                while dst in taken:
                    dst, k = out_abs / "figures" / f"{src.stem}_{k}{src.suffix}", k + 1
                atomic_write_bytes(dst, src_abs.read_bytes())
                copies[src_abs] = dst
                taken.add(dst)
            placed.append(copies[src_abs])
        return placed

    def to_markdown(self, figure_refs: list[str] | None = None) -> str:
        """The Markdown text; ``figure_refs`` are the image links (default: the paths as given)."""
        refs = iter(
            figure_refs if figure_refs is not None else [p.as_posix() for p in self.figures]
        )
        parts = [f"# {escape_markdown(self.title)}"]
        if self.subtitle:
            parts.append(escape_markdown(self.subtitle))
        fig_no = 0
        for block in self._blocks:
            if isinstance(block, _Heading):
                parts.append("#" * block.level + " " + escape_markdown(block.text))
            elif isinstance(block, _Paragraph):
                parts.append(escape_markdown(block.text).replace("\n", "  \n"))
            elif isinstance(block, _TableBlock):
                parts.append(block.table.to_markdown())
            elif isinstance(block, _Figure):
                fig_no += 1
                ref = next(refs)
                alt = escape_markdown(block.caption or block.path.stem).replace("\n", " ")
                parts.append(f"![{alt}]({ref})")
                label = f"*Figure {fig_no}.*"
                if block.caption:
                    label += " " + escape_markdown(block.caption).replace("\n", " ")
                parts.append(label)
            elif isinstance(block, _Code):
                fence = _fence(block.text)
                parts.append(f"{fence}{block.language}\n{block.text.rstrip(chr(10))}\n{fence}")
        return "\n\n".join(parts) + "\n"

    def to_html(
        self, figure_srcs: list[str] | None = None, figure_widths: list[int | None] | None = None
    ) -> str:
        """The HTML page; ``figure_srcs`` are the ``<img src>`` values (default: paths as given)
        and ``figure_widths`` their display widths in CSS pixels (None: natural size)."""
        srcs = iter(
            figure_srcs if figure_srcs is not None else [p.as_posix() for p in self.figures]
        )
        widths = iter(figure_widths if figure_widths is not None else [None] * len(self.figures))
        esc = html.escape
        used: set[str] = set()
        body = ["<header>", f"<h1>{esc(self.title)}</h1>"]
        if self.subtitle:
            body.append(f'<p class="subtitle">{esc(self.subtitle)}</p>')
        body.append("</header>")
        fig_no = table_no = 0
        for block in self._blocks:
            if isinstance(block, _Heading):
                n = block.level
                body.append(f'<h{n} id="{_slug(block.text, used)}">{esc(block.text)}</h{n}>')
            elif isinstance(block, _Paragraph):
                body.append(f"<p>{esc(block.text)}</p>")
            elif isinstance(block, _TableBlock):
                table_no += 1
                body.append(block.table.to_html(table_id=_slug(f"table-{table_no}", used)))
            elif isinstance(block, _Figure):
                fig_no += 1
                alt = esc(block.caption or block.path.stem)
                cap = f'<span class="figno">Figure {fig_no}.</span>'
                if block.caption:
                    cap += " " + esc(block.caption)
                width = next(widths)
                size = f' width="{width}"' if width else ""
                body.append(
                    f'<figure id="{_slug(f"figure-{fig_no}", used)}">'
                    f'<img src="{esc(next(srcs))}" alt="{alt}"{size}>'
                    f"<figcaption>{cap}</figcaption></figure>"
                )
            elif isinstance(block, _Code):
                lang = f' class="language-{block.language}"' if block.language else ""
                body.append(f"<pre><code{lang}>{esc(block.text.rstrip(chr(10)))}</code></pre>")
        body.append(f"<footer>Generated by advlab {esc(__version__)}</footer>")
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(self.title)}</title>\n"
            f"<style>{_CSS}</style>\n"
            "</head>\n<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
        )

    # ------------------------------------------------------------------ output
    def write(
        self, out_dir: str | os.PathLike[str], name: str = "report", *, embed: bool = False
    ) -> list[Path]:
        """Write ``out_dir/<name>.md`` and ``out_dir/<name>.html`` atomically.

        Figures inside ``out_dir`` are referenced by their path relative to it; figures elsewhere
        are first copied into ``out_dir/figures/``, so the directory is self-contained. With
        ``embed=True`` the HTML inlines every figure as a base64 data URI instead (the Markdown
        still links the files). Every figure file is checked before anything is written.

        Returns the figure paths as the report references them, in the order added.
        """
        if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name) or name in (".", ".."):
            raise ValueError(f"name must be a plain file stem like 'report', got {name!r}")
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"out_dir must be a directory, got the file {str(out)!r}")
        out.mkdir(parents=True, exist_ok=True)
        placed = self._place_figures(out)
        rel = [quote(os.path.relpath(p, out.resolve()).replace(os.sep, "/")) for p in placed]
        srcs, widths = [], []
        for p, link in zip(placed, rel):
            data = p.read_bytes()
            widths.append(_png_css_width(data))
            if embed:
                mime = _MIME.get(p.suffix.lower(), "application/octet-stream")
                srcs.append(f"data:{mime};base64," + base64.b64encode(data).decode("ascii"))
            else:
                srcs.append(link)
        atomic_write_text(out / f"{name}.md", self.to_markdown(rel))
        atomic_write_text(out / f"{name}.html", self.to_html(srcs, widths))
        return placed


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} text must be a str, got {type(value).__name__}")
    return value
