"""Tests of the report layer: tables, atomic files, figures, the HTML / Markdown report."""

from __future__ import annotations

import base64
import csv
import dataclasses
import importlib.util
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from advlab.report import (
    Cell,
    Report,
    Table,
    atomic_open,
    atomic_savefig,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    escape_markdown,
    format_value,
)

mpimg = pytest.importorskip("matplotlib.image")
figures = pytest.importorskip("advlab.report.figures")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_report.py"


# --------------------------------------------------------------------------- helpers
class _HTMLCells(HTMLParser):
    """Collects the text of th / td cells per table, img srcs and text of every element."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.imgs: list[dict[str, str | None]] = []
        self._cell: list[str] | None = None
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.imgs.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse_html(text: str) -> _HTMLCells:
    p = _HTMLCells()
    p.feed(text)
    p.close()
    return p


def _md_rows(markdown: str) -> list[list[str]]:
    """Rows of the pipe tables in ``markdown``, cells unescaped (separator rows dropped)."""
    rows = []
    for line in markdown.splitlines():
        if not line.startswith("| "):
            continue
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        cells = [re.sub(r"\\(.)", r"\1", c.strip()) for c in cells]
        if all(re.fullmatch(r"-+:?", c) for c in cells):
            continue
        rows.append(cells)
    return rows


def _sample_table() -> Table:
    return Table(
        title="Success rate | Inc-v3 source <eps = 16/255>",
        columns=["attack", "Inc-v3", "Inc-v4", "n", "eps", "note"],
        rows=[
            ["FGSM", Cell(72.3, "*"), 28.2, 1000, 16 / 255, "a|b"],
            ["I-FGSM", Cell(100.0, "*"), 22.8049, 999, 0.0627, "*emph* <b>"],
            ["MI-FGSM", Cell(np.float32(99.995), "*"), -0.001, np.int64(7), None, ""],
            ["x_adv", Cell(torch.tensor(0.125), "†"), float("nan"), 3, 1e-3, "#1"],
        ],
        notes="* = white-box",
        formats={"eps": ".4f"},
    )


# --------------------------------------------------------------------------- formatting
def test_format_value_rules():
    assert format_value(8.4712) == "8.47"
    assert format_value(8.4712, ".1f") == "8.5"
    assert format_value(10) == "10"
    assert format_value(10, ".2f") == "10.00"
    assert format_value(None) == ""
    assert format_value(True) == "yes"
    assert format_value("Inc-v3") == "Inc-v3"
    assert format_value(float("nan")) == "nan"
    assert format_value(float("-inf")) == "-inf"
    assert format_value(-0.001) == "0.00"  # no "-0.00"
    assert format_value(Cell(100.0, "*")) == "100.00*"
    assert format_value(np.float32(0.5)) == "0.50"
    assert format_value(torch.tensor(3)) == "3"
    with pytest.raises(ValueError, match="'d'"):
        format_value(1.5, "d")


def test_table_formats_agree_across_md_csv_html_json(tmp_path):
    table = _sample_table()
    csv_path = table.to_csv(tmp_path / "t.csv")
    json_path = table.to_json(tmp_path / "t.json")
    obj = json.loads(json_path.read_text())
    formatted = obj["formatted"]
    header = obj["columns"]

    md = _md_rows(table.to_markdown())
    with open(csv_path, newline="") as f:
        csv_rows = list(csv.reader(f))
    html_rows = _parse_html(table.to_html()).tables[0]

    assert md == [header] + formatted
    assert csv_rows == [header] + formatted
    assert [[c for c in r] for r in html_rows] == [header] + formatted

    # The raw numbers in the JSON round to the text shown everywhere.
    for raw_row, text_row, mark_row in zip(obj["rows"], formatted, obj["marks"]):
        for col, raw, text, mark in zip(header, raw_row, text_row, mark_row):
            body = text[: len(text) - len(mark)] if mark else text
            assert text.endswith(mark)
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                decimals = 4 if col == "eps" else (2 if isinstance(raw, float) else 0)
                assert float(body) == pytest.approx(raw, abs=0.5 * 10**-decimals + 1e-12)
    assert formatted[0][1] == "72.30*"
    assert formatted[0][4] == "0.0627"  # the per-column format
    assert formatted[2][2] == "0.00"
    assert formatted[3][1] == "0.12†"  # a torch scalar, unwrapped; banker's rounding of .125
    assert obj["rows"][3][2] is None and formatted[3][2] == "nan"  # strict JSON, text kept
    assert obj["marks"][0][1] == "*" and obj["rows"][0][1] == 72.3


def test_markdown_table_keeps_its_shape_with_special_characters():
    md = _sample_table().to_markdown()
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    n_pipes = {len(re.findall(r"(?<!\\)\|", ln)) for ln in lines}
    assert n_pipes == {7}  # 6 columns everywhere: the "a|b" cell is escaped
    assert "| --- | ---: | ---: | ---: | ---: | --- |" in md
    assert md.startswith("**Success rate \\| Inc-v3 source \\<eps = 16/255\\>**")
    assert escape_markdown("- a\n# b\n1. c\n-0.5") == "\\- a\n\\# b\n1\\. c\n-0.5"


def test_table_html_escapes_and_marks():
    frag = _sample_table().to_html(table_id="t1")
    assert "<b>" not in frag and "&lt;b&gt;" in frag
    assert "&lt;eps = 16/255&gt;" in frag
    assert '<td class="num marked">72.30<span class="mark">*</span></td>' in frag
    assert 'id="t1"' in frag


def test_table_validation_errors_name_the_problem():
    with pytest.raises(ValueError, match="row 1 has 1 values but the table has 2 columns"):
        Table("t", ["a", "b"], [[1, 2], [3]])
    with pytest.raises(ValueError, match="duplicates \\['a'\\]"):
        Table("t", ["a", "a"], [])
    with pytest.raises(ValueError, match="unknown columns \\['z'\\]"):
        Table("t", ["a"], [[1.0]], formats={"z": ".1f"})
    with pytest.raises(ValueError, match="column 'a'"):
        Table("t", ["a"], [[1.5]], formats={"a": "d"})
    with pytest.raises(ValueError, match="at least one column"):
        Table("t", [], [])
    with pytest.raises(TypeError, match="another Cell"):
        Cell(Cell(1))


def test_table_copies_rows_and_is_frozen():
    rows = [["a", 1.0]]
    t = Table("t", ["k", "v"], rows)
    rows[0][1] = 99.0
    rows.append(["b", 2.0])
    assert t.rows == [["a", 1.0]]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.title = "x"  # type: ignore[misc]


def test_from_records_orders_columns_and_fills_gaps():
    @dataclasses.dataclass
    class Row:
        model: str
        acc: float

    t = Table.from_records([{"model": "CNN", "acc": 99.1}, {"model": "MLP", "extra": 1}])
    assert t.columns == ["model", "acc", "extra"]
    assert t.rows == [["CNN", 99.1, None], ["MLP", None, 1]]
    t2 = Table.from_records([Row("CNN", 99.0)], columns=["acc", "model"], title="T")
    assert t2.rows == [[99.0, "CNN"]] and t2.title == "T"
    with pytest.raises(ValueError, match="needs columns"):
        Table.from_records([])
    assert Table.from_records([], columns=["a"]).rows == []


# --------------------------------------------------------------------------- atomic io
def _leftovers(directory: Path, name: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != name)


def test_atomic_write_failure_leaves_no_partial_file(tmp_path):
    target = tmp_path / "results.json"
    with pytest.raises(RuntimeError, match="midway"):
        with atomic_open(target, "w") as f:
            f.write('{"half": ')
            raise RuntimeError("midway")
    assert not target.exists()
    assert _leftovers(tmp_path, "results.json") == []

    atomic_write_text(target, "old content\n")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "wb") as f:
            f.write(b"new but partial")
            raise RuntimeError("midway")
    assert target.read_text() == "old content\n"
    assert _leftovers(tmp_path, "results.json") == []

    with pytest.raises(TypeError, match="cannot convert"):
        atomic_write_json(target, {"x": object()})
    assert target.read_text() == "old content\n"


def test_atomic_write_fsync_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "t.csv"
    atomic_write_text(target, "a\n1\n")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr("advlab._io.os.fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        Table("t", ["a"], [[2]]).to_csv(target)
    monkeypatch.undo()
    assert target.read_text() == "a\n1\n"
    assert _leftovers(tmp_path, "t.csv") == []


def test_atomic_savefig_failure_leaves_no_file(tmp_path):
    class BrokenFigure:
        def savefig(self, f, **kwargs):
            f.write(b"\x89PNG half an image")
            raise RuntimeError("renderer crashed")

    target = tmp_path / "fig.png"
    with pytest.raises(RuntimeError, match="renderer crashed"):
        atomic_savefig(BrokenFigure(), target)
    assert list(tmp_path.iterdir()) == []


def test_atomic_writers_round_trip(tmp_path):
    @dataclasses.dataclass
    class Result:
        acc: float
        tensor: torch.Tensor

    p = atomic_write_json(
        tmp_path / "sub" / "r.json",
        {"r": Result(float("nan"), torch.tensor([1, 2])), "n": np.int64(3), "p": Path("a/b")},
    )
    assert json.loads(p.read_text()) == {"r": {"acc": None, "tensor": [1, 2]}, "n": 3, "p": "a/b"}
    assert atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert (p.stat().st_mode & 0o777) == 0o644
    with pytest.raises(ValueError, match="mode must be"):
        with atomic_open(tmp_path / "x", "a"):
            pass


# --------------------------------------------------------------------------- figures
def _png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img[..., :3].std() > 0.01  # not blank
    return img


def test_bar_chart_png_has_the_requested_pixel_size(tmp_path):
    out = figures.bar_chart(
        ["AlexNet", "Basic-CNN", "Linear-Regression"],
        {"clean": [99.05, 99.05, 98.37], "FGSM": [8.70, 8.47, None]},
        tmp_path / "acc.png",
        "Accuracy",
        "accuracy",
        percent=True,
        figsize=(6.0, 4.0),
    )
    assert out == tmp_path / "acc.png"
    assert _png(out).shape[:2] == (600, 900)  # figsize * 150 dpi
    with pytest.raises(ValueError, match="series 'FGSM' has 1 values but there are 2 groups"):
        figures.bar_chart(["a", "b"], {"FGSM": [1.0]}, tmp_path / "x.png", "t", "y")
    assert not (tmp_path / "x.png").exists()


def test_line_plot_and_grid(tmp_path):
    out = figures.line_plot(
        [0.0, 0.5, 1.0],
        {"Inc-v4": [22.8, 40.0, 48.8], "Res-152": [16.2, 30.0, float("nan")]},
        tmp_path / "mu.png",
        "Success vs decay",
        "decay factor mu",
        "success rate",
        percent=True,
        figsize=(5.0, 3.0),
        dpi=100,
    )
    assert _png(out).shape[:2] == (300, 500)
    out = figures.line_plot(
        ["FGSM", "I-FGSM"], {"acc": [10, 5]}, tmp_path / "cat.png", "t", "x", "y", markers=False
    )
    assert _png(out).shape[:2] == (round(4.3 * 150), 7 * 150)

    epochs = [1, 2, 3]
    panels = {
        m: {"clean": (epochs, [99, 98, 97]), "FGSM": (epochs, [10, 50, 90])}
        for m in ("AlexNet", "ConvNet", "Basic-CNN", "MLP")
    }
    out = figures.multi_line_grid(
        panels,
        tmp_path / "ft.png",
        "Fine-tuning",
        "epoch",
        "accuracy",
        percent=True,
        ncols=3,
        dpi=60,
    )
    img = _png(out)
    w, h = 3.6 * 3 + 0.6, 2.7 * 2 + 1.1
    assert img.shape[:2] == (round(h * 60), round(w * 60))
    with pytest.raises(ValueError, match="x has 2 values, y has 3"):
        figures.multi_line_grid({"p": {"s": ([1, 2], [1, 2, 3])}}, tmp_path / "y.png", "t")


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid_handles_gray_and_rgb(tmp_path, channels):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, channels, 16, 16, generator=gen)
    x_adv = (x + 0.1 * torch.randn(3, channels, 16, 16, generator=gen)).clamp(0, 1)
    before = x.clone()
    out = figures.image_grid(
        x,
        x_adv,
        tmp_path / f"grid{channels}.png",
        orig_labels=torch.tensor([1, 2, 3]),
        adv_labels=[1, 7, 3],
        true_labels=[1, 2, 0],
        title="examples",
        show_perturbation=True,
        dpi=60,
    )
    img = _png(out)
    assert img.shape[1] == round(max(5.0, 1.6 + 3 * 1.3) * 60)
    assert torch.equal(x, before)  # the caller's tensor is untouched
    # no true labels, class names, [N, H, W] input, more images than shown
    out = figures.image_grid(
        x[:, 0],
        x_adv[:, 0],
        tmp_path / "names.png",
        [0, 1, 2],
        [0, 2, 2],
        class_names=["zero", "one", "two", "three"],
        max_images=2,
        dpi=50,
    )
    _png(out)


def test_image_grid_rejects_bad_shapes(tmp_path):
    x = torch.rand(2, 2, 8, 8)
    with pytest.raises(ValueError, match=r"\[N, 1 or 3, H, W\], got \[2, 2, 8, 8\]"):
        figures.image_grid(x, x, tmp_path / "g.png", [0, 1], [0, 1])
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="same shape"):
        figures.image_grid(x, x[:1], tmp_path / "g.png", [0, 1], [0, 1])
    with pytest.raises(ValueError, match="adv_labels has 1 labels but there are 2 images"):
        figures.image_grid(x, x, tmp_path / "g.png", [0, 1], [0])


def test_figures_leave_pyplot_alone(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    before = list(plt.get_fignums())
    backend = plt.get_backend()
    figures.bar_chart(["a"], {"s": [1.0]}, tmp_path / "a.png", "t", "y", dpi=50)
    assert plt.get_fignums() == before and plt.get_backend() == backend


# --------------------------------------------------------------------------- report
@pytest.fixture(scope="module")
def figure_files(tmp_path_factory) -> Path:
    """Three small figures drawn once: out/bar.png, out/figs/line.png, src/my fig.png."""
    base = tmp_path_factory.mktemp("figures")
    figures.bar_chart(["a", "b"], {"s": [1.0, 2.0]}, base / "out" / "bar.png", "bar", "y", dpi=50)
    figures.line_plot(
        [1, 2], {"s": [1, 2]}, base / "out" / "figs" / "line.png", "l", "x", "y", dpi=50
    )
    figures.line_plot([1, 2], {"s": [2, 1]}, base / "src" / "my fig.png", "l", "x", "y", dpi=50)
    return base


def _make_report(tmp_path: Path, figure_files: Path) -> tuple[Report, list[Path]]:
    """A report using every kind of block; two figures inside tmp_path/out, one outside."""
    shutil.copytree(figure_files, tmp_path, dirs_exist_ok=True)
    out = tmp_path / "out"
    inside, nested, elsewhere = (
        out / "bar.png",
        out / "figs" / "line.png",
        tmp_path / "src" / "my fig.png",
    )
    r = Report("MNIST <robustness>", subtitle="eps = 0.35 & friends")
    r.add_heading("Accuracy")
    r.add_paragraph("<script>alert('x')</script> & *not bold*")
    r.add_table(_sample_table())
    r.add_figure(inside, "Bars <1>")
    r.add_heading("Curves", level=3)
    r.add_figure(nested, "Line")
    r.add_table(Table("Second table", ["k", "v"], [["a", 1.5]]))
    r.add_figure(elsewhere)
    r.add_code("x = `1` < 2\n```", language="python")
    return r, [inside, nested, elsewhere]


def test_report_references_every_figure_and_table(tmp_path, figure_files):
    report, _ = _make_report(tmp_path, figure_files)
    out = tmp_path / "out"
    placed = report.write(out)
    html_text = (out / "report.html").read_text()
    md_text = (out / "report.md").read_text()

    rel = ["bar.png", "figs/line.png", "figures/my%20fig.png"]
    assert [p.relative_to(out.resolve()).as_posix() for p in placed] == [
        "bar.png",
        "figs/line.png",
        "figures/my fig.png",
    ]
    assert all(p.is_file() for p in placed)
    parsed = _parse_html(html_text)
    assert [img["src"] for img in parsed.imgs] == rel
    for link in rel:
        assert f"]({link})" in md_text
    # every table, with every cell
    assert len(parsed.tables) == 2 and html_text.count("<table") == 2
    assert parsed.tables[0][1:] == _sample_table().to_json_obj()["formatted"]
    assert _md_rows(md_text)[1:5] == _sample_table().to_json_obj()["formatted"]
    for title in ("Second table", "Success rate | Inc-v3 source &lt;eps = 16/255&gt;"):
        assert title in html_text
    assert "Figure 3." in html_text and "*Figure 3.*" in md_text
    # the figure sizes: 150-dpi-free images (50 dpi) keep their natural size
    assert all("width" not in img for img in parsed.imgs)


def test_report_html_escapes_text_and_is_self_contained(tmp_path, figure_files):
    report, _ = _make_report(tmp_path, figure_files)
    out = tmp_path / "out"
    report.write(out)
    html_text = (out / "report.html").read_text()
    assert "<script" not in html_text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; *not bold*" in html_text
    assert "<title>MNIST &lt;robustness&gt;</title>" in html_text
    assert "Bars &lt;1&gt;" in html_text
    assert "x = `1` &lt; 2" in html_text
    assert not re.search(r"(?i)(https?:)?//[a-z]", html_text.replace("http-equiv", ""))
    assert "<link" not in html_text and "@import" not in html_text
    md_text = (out / "report.md").read_text()
    assert "\\<script\\>alert('x')\\</script\\> & \\*not bold\\*" in md_text
    assert "````python\nx = `1` < 2\n```\n````" in md_text  # fence longer than the content's


def test_report_embed_inlines_figures(tmp_path, figure_files):
    report, sources = _make_report(tmp_path, figure_files)
    out = tmp_path / "emb"
    report.write(out, name="single", embed=True)
    parsed = _parse_html((out / "single.html").read_text())
    assert len(parsed.imgs) == 3
    for img, src in zip(parsed.imgs, sources):
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        assert base64.b64decode(img["src"][len(prefix) :]) == src.read_bytes()
    assert (out / "single.md").is_file()


def test_report_figure_display_width_follows_dpi(tmp_path):
    fig = figures.bar_chart(["a"], {"s": [1.0]}, tmp_path / "a.png", "t", "y", figsize=(6.4, 4))
    Report("r").add_figure(fig, "c").write(tmp_path)
    img = _parse_html((tmp_path / "report.html").read_text()).imgs[0]
    assert img["width"] == str(round(6.4 * 96))


def test_report_checks_inputs_before_writing(tmp_path):
    r = Report("r").add_figure(tmp_path / "missing.png", "gone")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        r.write(tmp_path / "out")
    assert not (tmp_path / "out" / "report.html").exists()
    with pytest.raises(ValueError, match="heading level"):
        Report("r").add_heading("h", level=7)
    with pytest.raises(TypeError, match="expects a Table"):
        Report("r").add_table({"a": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="plain file stem"):
        Report("r").write(tmp_path, name="../evil")
    with pytest.raises(ValueError, match="non-empty"):
        Report("  ")


# --------------------------------------------------------------------------- screenshot
def _load_script():
    spec = importlib.util.spec_from_file_location("screenshot_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_screenshot_script_explains_a_missing_chromium(tmp_path, monkeypatch, capsys):
    script = _load_script()
    page = tmp_path / "r.html"
    page.write_text("<p>x</p>")
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-such-chromium"))
    assert script.main([str(page), str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert "apt-get install -y chromium" in err and "no-such-chromium" in err
    assert script.main([str(tmp_path / "absent.html"), str(tmp_path / "r.png")]) == 2


@pytest.mark.browser
def test_screenshot_of_a_report_is_a_non_blank_png(tmp_path, figure_files):
    if not shutil.which(os.environ.get("CHROMIUM", "chromium")):
        if os.environ.get("ADVLAB_REQUIRE_BROWSER") == "1":
            pytest.fail("ADVLAB_REQUIRE_BROWSER=1 but chromium is not on PATH "
                        "(apt-get install chromium)")
        pytest.skip("needs Debian's chromium: apt-get install chromium "
                    "(set ADVLAB_REQUIRE_BROWSER=1 to make its absence a failure)")
    report, _ = _make_report(tmp_path, figure_files)
    report.write(tmp_path / "out")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(tmp_path / "out" / "report.html"),
            str(shot),
            "--height",
            "1200",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    img = _png(shot)
    assert img.shape[1] == 1280
    # the page is white with dark text and coloured figures: plenty of non-white pixels
    non_white = (img[..., :3] < 0.9).any(axis=-1).mean()
    assert non_white > 0.01
    assert not list(tmp_path.glob(".shot.png*"))


def test_csv_text_is_plain(tmp_path):
    text = Table("t", ["a", "b"], [["x,y", 1.0]]).to_csv_text()
    assert list(csv.reader(io.StringIO(text))) == [["a", "b"], ["x,y", "1.00"]]
    assert math.isclose(float(text.splitlines()[1].split(",")[-1]), 1.0)


def test_report_copies_outside_figures_without_clobbering(tmp_path, figure_files):
    out = tmp_path / "out"
    shutil.copytree(figure_files, tmp_path, dirs_exist_ok=True)
    inside = out / "figures" / "my fig.png"
    inside.parent.mkdir(parents=True)
    inside_bytes = (out / "bar.png").read_bytes()
    inside.write_bytes(inside_bytes)
    outside = tmp_path / "src" / "my fig.png"
    r = Report("r").add_figure(outside, "a").add_figure(inside, "b").add_figure(outside, "c")
    placed = r.write(out)
    names = [p.relative_to(out.resolve()).as_posix() for p in placed]
    assert names == ["figures/my fig_2.png", "figures/my fig.png", "figures/my fig_2.png"]
    assert inside.read_bytes() == inside_bytes
    assert placed[0].read_bytes() == outside.read_bytes()
    assert r.write(out) == placed  # writing again reuses the same names
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["my fig.png", "my fig_2.png"]
