#!/usr/bin/env python
"""Screenshot a static HTML report with headless Chromium, to look at it as a reader would.

Usage::

    python scripts/screenshot_report.py REPORT_HTML OUT_PNG [--height 4000] [--width 1280]
    python scripts/screenshot_report.py --demo OUT_DIR      # build a demo report, screenshot it

Chromium draws the page in a window of ``--width`` x ``--height`` CSS pixels; the blank space
below the end of the page is then cropped away (``--no-crop`` keeps it). A page taller than the
window is cut at the bottom: a warning says so, and a larger ``--height`` fixes it.

Chromium comes from the system: on Debian, ``apt-get update && apt-get install -y chromium``.
Set ``CHROMIUM=/path/to/chrome`` to use another binary. Exit status: 0 on success, 2 when
Chromium is missing or the input does not exist, 1 when Chromium fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = (
    "On Debian/Ubuntu: apt-get update && apt-get install -y chromium "
    "(or set CHROMIUM=/path/to/chromium)."
)


class ScreenshotError(RuntimeError):
    """Chromium is missing, failed, or wrote no image."""


def find_chromium() -> str:
    """Path of a Chromium binary: $CHROMIUM, then chromium / chrome on PATH, /usr/bin/chromium."""
    env = os.environ.get("CHROMIUM")
    if env:
        if shutil.which(env):
            return shutil.which(env)  # type: ignore[return-value]
        raise ScreenshotError(f"CHROMIUM={env!r} is not an executable. {INSTALL_HINT}")
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    raise ScreenshotError(
        f"Chromium not found (looked for {', '.join(CANDIDATES)}). {INSTALL_HINT}"
    )


def chromium_command(
    chromium: str, url: str, out_png: Path, user_data_dir: str, width: int, height: int
) -> list[str]:
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--force-device-scale-factor=1",
        f"--user-data-dir={user_data_dir}",
        f"--screenshot={out_png}",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
        url,
    ]


def _crop_bottom(png: Path, margin: int = 24) -> bool:
    """Cut the uniform background below the page's last content row. Returns False when the
    page reaches the bottom edge of the window (it may be taller than the screenshot)."""
    try:
        import matplotlib.image as mpimg
        import numpy as np
    except ImportError:  # cropping is a nicety; keep the full window without matplotlib
        return True
    img = mpimg.imread(png)
    background = img[-1]
    differs = np.any(np.abs(img - background[None]) > 1e-3, axis=(1, 2))
    rows = np.nonzero(differs)[0]
    if rows.size == 0:
        return True
    last = int(rows[-1])
    if last >= img.shape[0] - 2:
        return False
    keep = min(img.shape[0], last + 1 + margin)
    tmp = png.with_name(f".{png.name}.crop.png")
    try:
        mpimg.imsave(tmp, img[:keep], format="png")
        os.replace(tmp, png)
    finally:
        if tmp.exists():
            tmp.unlink()
    return True


def screenshot(
    html_path: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    *,
    width: int = 1280,
    height: int = 4000,
    timeout: float = 90.0,
    crop: bool = True,
) -> Path:
    """Render ``html_path`` in headless Chromium and write a PNG screenshot to ``out_png``."""
    html_file = Path(html_path).resolve()
    if not html_file.is_file():
        raise FileNotFoundError(f"report HTML not found: {str(html_file)!r}")
    if width < 100 or height < 100:
        raise ValueError(f"width and height must be >= 100 px, got {width}x{height}")
    out = Path(out_png).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    chromium = find_chromium()
    with tempfile.TemporaryDirectory(prefix="advlab-chromium-") as profile:
        # Chromium writes the PNG itself: let it write to a temporary name in the same directory
        # and move it into place only once it is complete.
        tmp_png = out.with_name(f".{out.name}.{os.getpid()}.png")
        cmd = chromium_command(chromium, html_file.as_uri(), tmp_png, profile, width, height)
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Chromium's helper processes share its new session: end that process group only.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            tmp_png.unlink(missing_ok=True)
            raise ScreenshotError(f"Chromium did not finish within {timeout:g} s") from None
        try:
            if proc.returncode != 0 or not tmp_png.is_file() or tmp_png.stat().st_size == 0:
                tail = err.decode(errors="replace").strip().splitlines()[-15:]
                raise ScreenshotError(
                    f"Chromium exited with status {proc.returncode} and wrote no screenshot.\n"
                    f"command: {' '.join(cmd)}\n" + "\n".join(tail)
                )
            if crop and not _crop_bottom(tmp_png):
                print(
                    f"warning: the page reaches the bottom of the {height}px window and may be "
                    "cut off; pass a larger --height",
                    file=sys.stderr,
                )
            os.replace(tmp_png, out)
        finally:
            tmp_png.unlink(missing_ok=True)
    return out


def build_demo_report(out_dir: str | os.PathLike[str]) -> Path:
    """A demo report with two tables and three figures (random data); returns report.html."""
    import torch

    from advlab.report import Cell, Report, Table, bar_chart, image_grid, line_plot

    out = Path(out_dir)
    models = ["AlexNet", "ConvNet", "Basic-CNN", "Linear-Regression"]
    clean = [99.05, 98.90, 99.05, 98.37]
    fgsm = [8.70, 15.07, 8.47, 0.06]
    acc = Table(
        "FGSM on MNIST, eps = 0.35 (numbers from the VOneNet-FGSM report)",
        ["model", "clean %", "FGSM %", "drop (points)"],
        [[m, c, f, c - f] for m, c, f in zip(models, clean, fgsm)],
        notes="Accuracy in percent on the 10,000 MNIST test images; true labels, eval mode.",
    )
    columns = [
        "Inc-v3",
        "Inc-v4",
        "IncRes-v2",
        "Res-152",
        "Inc-v3ens3",
        "Inc-v3ens4",
        "IncRes-v2ens",
    ]
    dong = {
        "FGSM": [72.3, 28.2, 26.2, 25.3, 11.3, 10.9, 4.8],
        "I-FGSM": [100.0, 22.8, 19.9, 16.2, 7.5, 6.4, 4.1],
        "MI-FGSM": [100.0, 48.8, 48.0, 35.6, 15.1, 15.2, 7.8],
    }
    transfer = Table(
        "Success rate (%) of attacks crafted on Inc-v3 <eps = 16/255>",
        ["attack", *columns],
        [
            [a] + [Cell(v, "*") if j == 0 else v for j, v in enumerate(vals)]
            for a, vals in dong.items()
        ],
        notes="* = white-box (the source model itself). Dong et al., CVPR 2018, Table 1.",
        float_format=".1f",
    )
    bar = bar_chart(
        models,
        {"clean": clean, "FGSM": fgsm},
        out / "accuracy.png",
        "MNIST accuracy, clean vs FGSM (eps = 0.35)",
        "accuracy",
        percent=True,
    )
    mu = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2]
    line = line_plot(
        mu,
        {
            "Inc-v3 (white-box)": [100, 100, 100, 100, 100, 100, 99.8],
            "Inc-v4": [22.8, 30.1, 37.0, 43.2, 47.1, 48.8, 45.0],
            "Res-152": [16.2, 20.4, 25.1, 30.0, 34.2, 35.6, 33.1],
        },
        out / "decay.png",
        "MI-FGSM success rate vs decay factor (illustrative)",
        "decay factor mu",
        "success rate",
        percent=True,
    )
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 28, 28, generator=gen)
    x_adv = (x + 0.35 * torch.randn(8, 1, 28, 28, generator=gen).sign()).clamp(0, 1)
    grid = image_grid(
        x,
        x_adv,
        out / "examples.png",
        orig_labels=[7, 2, 1, 0, 4, 1, 4, 9],
        adv_labels=[3, 2, 8, 0, 9, 7, 4, 4],
        true_labels=[7, 2, 1, 0, 4, 1, 4, 5],
        title="FGSM examples (random images), eps = 0.35",
        show_perturbation=True,
    )
    report = Report("advlab demo report", subtitle="Two tables, three figures, random data.")
    report.add_heading("Accuracy under FGSM")
    report.add_paragraph(
        "This paragraph is escaped: <b>not bold</b> & *not emphasis*.\nA second line."
    )
    report.add_table(acc).add_figure(bar, "Clean and FGSM accuracy per model.")
    report.add_heading("Transfer")
    report.add_table(transfer)
    report.add_figure(line, "Black-box success peaks near mu = 1.")
    report.add_heading("Examples", level=3)
    report.add_figure(grid, "Original (top), adversarial (middle), perturbation (bottom).")
    report.add_code("advlab reproduce vonenet-fgsm --preset quick", language="console")
    report.write(out)
    return out / "report.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report_html", nargs="?", help="the report's HTML file")
    parser.add_argument("out_png", nargs="?", help="where to write the screenshot")
    parser.add_argument("--demo", metavar="OUT_DIR", help="build a demo report in OUT_DIR first")
    parser.add_argument("--width", type=int, default=1280, help="window width (default 1280)")
    parser.add_argument("--height", type=int, default=4000, help="window height (default 4000)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds (default 90)")
    parser.add_argument("--no-crop", action="store_true", help="keep the blank space below")
    args = parser.parse_args(argv)
    if args.demo:
        html_file = build_demo_report(args.demo)
        out_png = Path(args.out_png or args.report_html or Path(args.demo) / "report.png")
    else:
        if not (args.report_html and args.out_png):
            parser.error("give REPORT_HTML and OUT_PNG (or --demo OUT_DIR)")
        html_file, out_png = Path(args.report_html), Path(args.out_png)
    try:
        out = screenshot(
            html_file,
            out_png,
            width=args.width,
            height=args.height,
            timeout=args.timeout,
            crop=not args.no_crop,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ScreenshotError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if "not found" in str(err) or "not an executable" in str(err) else 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
