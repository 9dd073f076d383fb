"""ImageNet-style image folders and the NIPS 2017 adversarial-competition dev set.

Two layouts, both loaded into memory as float pixels in [0, 1]:

* :func:`load_image_folder`: ``root/<class>/<image>`` (ImageNet-style, like torchvision's
  ``ImageFolder``). The class index is the position of the folder name in sorted order
  (for the 1000 ImageNet synset folders ``n01440764`` ... this is the standard 1000-class
  index that timm uses), or comes from a ``class_to_idx`` mapping.
* :func:`load_nips17`: the NIPS 2017 dev-set layout used by Dong et al. (CVPR 2018): PNG
  files ``images/<ImageId>.png`` and a CSV (``images.csv``, or the competition's
  ``dev_dataset.csv``) with at least the columns ``ImageId`` and ``TrueLabel`` (and usually
  ``TargetClass``). Labels in the CSV are 1-indexed over 1001 classes (0 = background); they
  are returned 0-indexed over timm's 1000 classes: ``y = TrueLabel - 1``.

Both return an :class:`ImageSet`, which unpacks as ``x, y, ids``: ``x`` float32
``[N, 3, size, size]`` in [0, 1], ``y`` int64 ``[N]``, ``ids`` a list of N strings.

Size policy (the same for every image): an image that is already ``size x size`` is used
as is; any other image is scaled with PIL bicubic so its *shorter* side is
``size / crop_pct`` (aspect ratio kept, no distortion), then center-cropped to
``size x size``. With ``resize=False`` such an image raises an error naming the file instead.
Images are converted to RGB (grayscale is replicated, an alpha channel is dropped).

Memory: one 299x299 image takes about 1.07 MB as float32, so the 1000-image NIPS 2017 set
takes about 1.1 GB; use ``limit`` for quick runs.

Example:
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from advlab.data.imagefolder import load_image_folder
    >>> root = Path(tempfile.mkdtemp())
    >>> for cls in ("cat", "dog"):
    ...     (root / cls).mkdir()
    ...     Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(root / cls / "a.png")
    >>> x, y, ids = load_image_folder(root, size=32)
    >>> tuple(x.shape), y.tolist(), ids
    ((2, 3, 32, 32), [0, 1], ['cat/a.png', 'dog/a.png'])
"""

from __future__ import annotations

import csv
import importlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CSV_NAMES",
    "IMAGE_EXTENSIONS",
    "DatasetFormatError",
    "ImageSet",
    "find_nips17_csv",
    "load_image",
    "load_image_folder",
    "load_nips17",
    "read_nips17_csv",
]

#: the install command printed when Pillow is missing.
INSTALL_HINT = "pip install 'advlab[imagenet]'"
#: the label space of the NIPS 2017 data set: 0 = background, 1..1000 = ImageNet (1 = tench).
NIPS17_CLASSES = 1001

log = logging.getLogger(__name__)

#: file extensions read as images (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
#: CSV names looked for by :func:`load_nips17`, in this order (in root, then root/images).
CSV_NAMES = ("images.csv", "dev_dataset.csv")
_REQUIRED_COLUMNS = ("ImageId", "TrueLabel")

PathLike = str | os.PathLike[str]


class DatasetFormatError(ValueError):
    """A dataset file exists but its content is not what the layout expects."""


@dataclass(frozen=True)
class ImageSet:
    """Images in [0, 1] with labels; unpacks as ``x, y, ids``.

    Attributes:
        x: float32 ``[N, 3, size, size]`` pixels in [0, 1].
        y: int64 ``[N]`` class indices, 0-indexed over 1000 ImageNet classes for NIPS 2017.
        ids: N strings: the ImageId (NIPS 2017) or the path relative to root (folder).
        target: int64 ``[N]`` target classes (0-indexed, 1000 classes) from the NIPS 2017
            ``TargetClass`` column, or None.
    """

    x: torch.Tensor
    y: torch.Tensor
    ids: list[str]
    target: torch.Tensor | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.x, self.y, self.ids))


# -- validation helpers --------------------------------------------------------------------

def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer (pixels), got {size!r}")
    return size


def _check_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be None or an integer >= 1, got {limit!r}")
    return limit


def _check_crop_pct(crop_pct: Any) -> float:
    if not isinstance(crop_pct, (int, float)) or not (0 < crop_pct <= 1):
        raise ValueError(f"crop_pct must be a number in (0, 1], got {crop_pct!r}")
    return float(crop_pct)


def _check_dir(root: PathLike, what: str) -> Path:
    path = Path(root)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"{what} {str(path)!r} is not a directory")
    return path


def _import_pil() -> Any:
    try:
        return importlib.import_module("PIL.Image")
    except ImportError as e:
        raise ImportError(f"reading images needs Pillow: {INSTALL_HINT} (import failed: {e})") \
            from e


# -- one image -----------------------------------------------------------------------------

def load_image(path: PathLike, size: int = 299, *, resize: bool = True,
               crop_pct: float = 1.0) -> torch.Tensor:
    """Read one image as uint8 ``[3, size, size]`` (RGB), with the module's size policy.

    Raises:
        FileNotFoundError: no such file.
        DatasetFormatError: unreadable image, or a wrong size with ``resize=False``.
    """
    size = _check_size(size)
    crop_pct = _check_crop_pct(crop_pct)
    Image = _import_pil()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetFormatError(f"cannot read image {str(path)!r}: {e}") from e
    w, h = rgb.size
    if (w, h) != (size, size):
        if not resize:
            raise DatasetFormatError(f"image {str(path)!r} is {w}x{h} pixels, expected "
                                     f"{size}x{size} (pass resize=True to resize and crop)")
        short = max(size, round(size / crop_pct))
        if w <= h:
            nw, nh = short, max(short, round(h * short / w))
        else:
            nw, nh = max(short, round(w * short / h)), short
        log.debug("resizing %s from %dx%d to %dx%d, center crop %d", path, w, h, nw, nh, size)
        rgb = rgb.resize((nw, nh), getattr(Image, "Resampling", Image).BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        rgb = rgb.crop((left, top, left + size, top + size))
    arr = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _load_many(paths: Sequence[Path], size: int, resize: bool, crop_pct: float) -> torch.Tensor:
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, p in enumerate(paths):
        out[i] = load_image(p, size, resize=resize, crop_pct=crop_pct)
    return out.to(torch.float32).div_(255.0)


# -- ImageNet-style folder -----------------------------------------------------------------

def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and \
        not path.name.startswith(".")


def _class_index(classes: list[str], class_to_idx: Mapping[str, int] | None,
                 root: Path) -> dict[str, int]:
    if class_to_idx is None:
        return {c: i for i, c in enumerate(classes)}
    if not isinstance(class_to_idx, Mapping):
        raise TypeError(f"class_to_idx must be a mapping folder name -> class index, got "
                        f"{type(class_to_idx).__name__}")
    for k, v in class_to_idx.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"class_to_idx[{k!r}] must be an integer >= 0, got {v!r}")
    unknown = [c for c in classes if c not in class_to_idx]
    if unknown:
        shown = ", ".join(map(repr, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
        raise DatasetFormatError(f"{len(unknown)} class folder(s) of {str(root)!r} are not in "
                                 f"class_to_idx: {shown}")
    return {c: int(class_to_idx[c]) for c in classes}


def load_image_folder(root: PathLike, size: int = 299, limit: int | None = None, *,
                      class_to_idx: Mapping[str, int] | None = None, resize: bool = True,
                      crop_pct: float = 1.0) -> ImageSet:
    """Load ``root/<class>/<image>`` into memory (see the module doc for the size policy).

    Args:
        root: folder with one subfolder per class (images may sit in nested folders).
        size: output side in pixels (299 for the Inception models).
        limit: at most this many images, taken round-robin over the classes (the first
            image of every class, then the second, ...) so that a small limit covers many
            classes; deterministic (sorted names).
        class_to_idx: folder name -> class index; default: index in sorted folder order.
            Every class folder must be in it.
        resize: resize and center-crop images that are not ``size x size`` (else raise).
        crop_pct: the center crop keeps this fraction of the shorter side (1.0: all of it;
            timm evaluates Inception models with 0.875).

    Returns:
        :class:`ImageSet` ``(x, y, ids)``; ``ids`` are POSIX paths relative to ``root``.

    Raises:
        FileNotFoundError / NotADirectoryError: ``root`` is missing or not a folder.
        DatasetFormatError: no class folders, no images, an unreadable image, a folder not
            in ``class_to_idx``.
    """
    size, limit = _check_size(size), _check_limit(limit)
    crop_pct = _check_crop_pct(crop_pct)
    root = _check_dir(root, "image folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetFormatError(
            f"{str(root)!r} has no class subfolders; expected root/<class>/<image> (for PNGs "
            f"plus a CSV of labels, the NIPS 2017 layout, use load_nips17)")
    index = _class_index(classes, class_to_idx, root)
    per_class: list[list[Path]] = []
    for c in classes:
        files = sorted((p for p in (root / c).rglob("*") if _is_image(p)),
                       key=lambda p: p.relative_to(root).as_posix())
        if not files:
            log.warning("class folder %s has no images (extensions %s)", root / c,
                        ", ".join(IMAGE_EXTENSIONS))
        per_class.append(files)
    total = sum(len(f) for f in per_class)
    if total == 0:
        raise DatasetFormatError(f"no images under {str(root)!r} (looked for extensions "
                                 f"{', '.join(IMAGE_EXTENSIONS)})")
    if limit is None:  # natural (class, file) order
        chosen = [(p, index[c]) for c, files in zip(classes, per_class) for p in files]
    else:  # round-robin over classes: first image of each class, then the second, ...
        n = min(limit, total)
        chosen = []
        depth = 0
        while len(chosen) < n:
            for c, files in zip(classes, per_class):
                if depth < len(files) and len(chosen) < n:
                    chosen.append((files[depth], index[c]))
            depth += 1
    paths = [p for p, _ in chosen]
    x = _load_many(paths, size, resize, crop_pct)
    y = torch.tensor([lab for _, lab in chosen], dtype=torch.int64)
    ids = [p.relative_to(root).as_posix() for p in paths]
    return ImageSet(x, y, ids)


# -- NIPS 2017 dev set ---------------------------------------------------------------------

def find_nips17_csv(root: PathLike) -> Path:
    """The label CSV of a NIPS 2017 folder: the first of :data:`CSV_NAMES` in ``root``, then
    in ``root/images``."""
    root = _check_dir(root, "NIPS 2017 folder")
    looked = []
    for folder in (root, root / "images"):
        for name in CSV_NAMES:
            p = folder / name
            looked.append(str(p))
            if p.is_file():
                return p
    raise FileNotFoundError(f"no label CSV in {str(root)!r}: looked for {', '.join(looked)}")


def _parse_label(value: str, column: str, where: str) -> int:
    try:
        lab = int(str(value).strip())
    except ValueError:
        raise DatasetFormatError(f"{where}: {column} must be an integer, got {value!r}") \
            from None
    if not 1 <= lab <= NIPS17_CLASSES - 1:
        raise DatasetFormatError(
            f"{where}: {column} must be a 1-indexed ImageNet label in [1, {NIPS17_CLASSES - 1}] "
            f"(1001 classes, 0 = background), got {lab}")
    return lab - 1  # label_1000 = label_1001 - 1 (see advlab.models.imagenet)


def read_nips17_csv(path: PathLike) -> list[dict[str, Any]]:
    """Rows of a NIPS 2017 label CSV as dicts ``{"ImageId", "TrueLabel", "TargetClass"}``
    with labels already 0-indexed over 1000 classes (``TargetClass`` None if the column is
    absent).

    Raises:
        DatasetFormatError: missing columns, an empty file, a bad or background label, a
            duplicate ImageId (the message names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label CSV {str(path)!r} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in _REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DatasetFormatError(
                f"{str(path)!r} lacks column(s) {', '.join(missing)}; expected at least "
                f"{', '.join(_REQUIRED_COLUMNS)} (and usually TargetClass), found "
                f"{', '.join(header) or 'no header'}")
        reader.fieldnames = header
        has_target = "TargetClass" in header
        rows: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for row in reader:
            where = f"{path}:{reader.line_num}"
            image_id = (row.get("ImageId") or "").strip()
            if not image_id:
                raise DatasetFormatError(f"{where}: empty ImageId")
            if image_id in seen:
                raise DatasetFormatError(f"{where}: duplicate ImageId {image_id!r} (first on "
                                         f"line {seen[image_id]})")
            seen[image_id] = reader.line_num
            rows.append({
                "ImageId": image_id,
                "TrueLabel": _parse_label(row.get("TrueLabel"), "TrueLabel", where),
                "TargetClass": (_parse_label(row.get("TargetClass"), "TargetClass", where)
                                if has_target else None),
            })
    if not rows:
        raise DatasetFormatError(f"{str(path)!r} has a header but no rows")
    return rows


def _image_path(images_dir: Path, image_id: str) -> Path | None:
    if Path(image_id).suffix.lower() in IMAGE_EXTENSIONS:
        p = images_dir / image_id
        return p if p.is_file() else None
    for ext in (".png", ".PNG", ".jpg", ".jpeg", ".JPEG"):
        p = images_dir / f"{image_id}{ext}"
        if p.is_file():
            return p
    return None


def load_nips17(root: PathLike, size: int = 299, limit: int | None = None, *,
                csv_path: PathLike | None = None, images_dir: PathLike | None = None,
                resize: bool = True, crop_pct: float = 1.0) -> ImageSet:
    """Load the NIPS 2017 dev set (1000 PNGs of 299x299 with a label CSV) into memory.

    Layout: ``root/images/<ImageId>.png`` (or PNGs directly in ``root``) and a CSV found by
    :func:`find_nips17_csv` (``images.csv`` or ``dev_dataset.csv``), with columns
    ``ImageId``, ``TrueLabel`` and optionally ``TargetClass`` (more columns are ignored).
    Labels become 0-indexed over 1000 classes: ``y = TrueLabel - 1`` (0 = background is
    rejected). Rows keep the CSV order; ``limit`` takes the first rows.

    Every row is checked (labels, duplicate ids, image files present) before any image is
    decoded.

    Returns:
        :class:`ImageSet` ``(x, y, ids)`` with ``ids`` the ImageIds and ``.target`` the
        0-indexed TargetClass (or None).

    Example:
        ``x, y, ids = load_nips17("nips17_dev", limit=100)``
    """
    size, limit = _check_size(size), _check_limit(limit)
    crop_pct = _check_crop_pct(crop_pct)
    root = _check_dir(root, "NIPS 2017 folder")
    csv_file = Path(csv_path) if csv_path is not None else find_nips17_csv(root)
    rows = read_nips17_csv(csv_file)
    if images_dir is not None:
        img_dir = _check_dir(images_dir, "images folder")
    else:
        img_dir = root / "images" if (root / "images").is_dir() else root
    if limit is not None:
        rows = rows[:limit]
    paths: list[Path] = []
    missing: list[str] = []
    for r in rows:
        p = _image_path(img_dir, r["ImageId"])
        if p is None:
            missing.append(str(img_dir / f"{r['ImageId']}.png"))
        else:
            paths.append(p)
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise FileNotFoundError(f"{len(missing)} image(s) listed in {str(csv_file)!r} are "
                                f"missing: {shown}")
    x = _load_many(paths, size, resize, crop_pct)
    y = torch.tensor([r["TrueLabel"] for r in rows], dtype=torch.int64)
    target = None
    if rows and rows[0]["TargetClass"] is not None:
        target = torch.tensor([r["TargetClass"] for r in rows], dtype=torch.int64)
    return ImageSet(x, y, [r["ImageId"] for r in rows], target)
