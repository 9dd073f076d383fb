"""MNIST from IDX files: offline first, checksummed, cached.

The MNIST database of handwritten digits (Y. LeCun, C. Cortes, C. J. C. Burges,
http://yann.lecun.com/exdb/mnist/, license CC BY-SA 3.0) ships inside this package, so
:func:`load_mnist` works without a network. Files are looked up, in this order:

1. the ``root`` argument (the folder itself, then ``root/mnist``, then ``root/MNIST/raw``, the
   torchvision layout);
2. the folder named by the ``ADVLAB_DATA`` environment variable (same three sub-paths);
3. only when neither 1 nor 2 is given: the copy bundled in the package
   (``advlab/_data/mnist``), then the download cache (``$XDG_CACHE_HOME/advlab/mnist``, by
   default ``~/.cache/advlab/mnist``). A folder you name must hold the files: advlab never
   falls back silently from it to another copy.

In each folder a raw file (``train-images-idx3-ubyte``) is preferred over its gzip
(``train-images-idx3-ubyte.gz``). The MD5 of the *decompressed* bytes is checked against
:data:`MD5`. A file that is found but fails that check raises :class:`ChecksumMismatchError`:
the loader never silently falls back to another copy.

Example:
    >>> from advlab.data import load_mnist
    >>> images, labels = load_mnist("test")
    >>> tuple(images.shape), images.dtype, tuple(labels.shape), labels.dtype
    ((10000, 1, 28, 28), torch.float32, (10000,), torch.int64)
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import struct
import tempfile
import urllib.request
import zlib
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "ENV_VAR",
    "MD5",
    "MIRRORS",
    "SPLITS",
    "ChecksumMismatchError",
    "IDXFormatError",
    "MNISTDownloadError",
    "MNISTFileError",
    "MNISTNotFoundError",
    "data_checksum",
    "download_mnist",
    "load_mnist",
    "locate_mnist",
    "mnist_dataset",
    "parse_idx",
    "search_dirs",
]

log = logging.getLogger(__name__)

#: Environment variable naming a data folder (the folder itself or its ``mnist`` sub-folder).
ENV_VAR = "ADVLAB_DATA"

#: The two splits and their (images, labels) file names, as in torchvision's ``MNIST/raw``.
SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: MD5 of each file's decompressed bytes (the original IDX files).
MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

#: Public mirrors of the gzip files, tried in order by :func:`download_mnist`.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
_IMAGE_SIZE = (28, 28)

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# --------------------------------------------------------------------------- errors


def _format_places(places: Sequence[Path]) -> str:
    if not places:
        return "  (none)"
    return "\n".join(f"  {i}. {p}" for i, p in enumerate(places, 1))


class MNISTNotFoundError(FileNotFoundError):
    """An MNIST file is in none of the searched places.

    Attributes: ``filename`` (the file's base name) and ``searched`` (every path tried, in order).
    """

    def __init__(self, filename: str, searched: Sequence[Path], hint: str = "") -> None:
        self.searched = list(searched)
        self.hint = hint
        super().__init__(filename)
        self.filename = filename

    def __str__(self) -> str:
        msg = (
            f"MNIST file {self.filename!r} (raw or .gz) not found; places looked, in order:\n"
            f"{_format_places(self.searched)}"
        )
        return msg + (f"\n{self.hint}" if self.hint else "")


class MNISTDownloadError(MNISTNotFoundError):
    """A file was missing and could not be downloaded from any mirror (``attempts`` says why)."""

    def __init__(
        self, filename: str, searched: Sequence[Path], attempts: Sequence[tuple[str, str]]
    ) -> None:
        self.attempts = list(attempts)
        tried = "\n".join(f"  {url}: {why}" for url, why in self.attempts) or "  (no mirrors)"
        super().__init__(filename, searched, hint=f"Download failed from every mirror:\n{tried}")


class MNISTFileError(ValueError):
    """An MNIST file was found but cannot be used (corrupt, wrong format)."""

    _what = "MNIST file {path} is unusable"

    def __init__(self, path: Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        self.searched: list[Path] = []
        super().__init__(str(path), problem)

    def __str__(self) -> str:
        msg = f"{self._what.format(path=self.path)}: {self.problem}"
        if self.searched:
            msg += (
                "\nIt was the first match in this search order (other copies are not used when "
                f"a found file is bad; replace or delete it):\n{_format_places(self.searched)}"
            )
        return msg


class ChecksumMismatchError(MNISTFileError):
    """The MD5 of a file's decompressed bytes differs from :data:`MD5`."""

    def __init__(self, path: Path, name: str, expected: str, actual: str) -> None:
        self.name = name
        self.expected_md5 = expected
        self.actual_md5 = actual
        problem = (
            f"MD5 of the decompressed bytes is {actual}, expected {expected} for {name} "
            "(file corrupt or not the original MNIST)"
        )
        super().__init__(path, problem)


class IDXFormatError(MNISTFileError):
    """A buffer is not a valid IDX file, or not the IDX layout expected."""

    _what = "{path} is not a valid MNIST IDX file"


# --------------------------------------------------------------------------- IDX parsing


def parse_idx(buf: bytes, *, name: str = "<buffer>", expected_magic: int | None = None):
    """Parse an IDX file (LeCun's format for MNIST) into a numpy array.

    The header is two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
    then one big-endian uint32 per dimension; the data follow in C order.

    Args:
        buf: the whole (decompressed) file.
        name: used in error messages.
        expected_magic: if given, the first four bytes read as a big-endian int must equal it
            (2051 for MNIST images, 2049 for labels).

    Returns:
        A read-only numpy array with the header's shape and dtype (native byte order).

    Raises:
        IDXFormatError: truncated header, unknown type code, wrong magic or wrong data length.

    Example:
        >>> import struct
        >>> parse_idx(struct.pack(">I2I", 0x0802, 1, 3) + bytes([1, 2, 3])).tolist()
        [[1, 2, 3]]
    """
    path = Path(name)
    if len(buf) < 4:
        raise IDXFormatError(path, f"only {len(buf)} bytes, an IDX header needs at least 4")
    magic = int.from_bytes(buf[:4], "big")
    if buf[0] != 0 or buf[1] != 0:
        raise IDXFormatError(
            path, f"magic number {magic} (0x{magic:08x}) does not start with two zero bytes"
        )
    if expected_magic is not None and magic != expected_magic:
        raise IDXFormatError(
            path, f"magic number {magic} (0x{magic:08x}), expected {expected_magic}"
        )
    code, ndim = buf[2], buf[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES)
        raise IDXFormatError(path, f"IDX type code 0x{code:02x} unknown, expected one of {known}")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise IDXFormatError(
            path, f"header declares {ndim} dimensions ({header} bytes) but file has {len(buf)}"
        )
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    dtype = _IDX_DTYPES[code]
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(buf) - header
    if have != need:
        raise IDXFormatError(
            path, f"header dims {tuple(dims)} need {need} data bytes, file has {have}"
        )
    arr = np.frombuffer(buf, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


# --------------------------------------------------------------------------- locations


def _bundled_dir() -> Path | None:
    try:
        ref = resources.files("advlab").joinpath("_data", "mnist")
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - broken install
        return None
    path = Path(str(ref))
    return path if path.is_dir() else None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "advlab" / "mnist"


def _expand(folder: Path) -> list[Path]:
    return [folder, folder / "mnist", folder / "MNIST" / "raw"]


def search_dirs(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched for MNIST files, in order (see the module docstring).

    Example:
        >>> search_dirs("/data")[:2]
        [PosixPath('/data'), PosixPath('/data/mnist')]
    """
    dirs: list[Path] = []
    if root is not None:
        dirs += _expand(Path(root).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        dirs += _expand(Path(env).expanduser())
    if dirs:  # a folder named explicitly must hold the files: no silent fallback
        return list(dict.fromkeys(dirs))
    bundled = _bundled_dir()
    if bundled is not None:
        dirs.append(bundled)
    dirs.append(_cache_dir())
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _find(name: str, dirs: Iterable[Path]) -> tuple[Path | None, list[Path]]:
    looked: list[Path] = []
    for d in dirs:
        for candidate in (d / name, d / f"{name}.gz"):
            looked.append(candidate)
            if candidate.is_file():
                return candidate, looked
    return None, looked


def _check_split(split: str) -> tuple[str, str]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    return SPLITS[split]


def locate_mnist(
    split: str = "train", root: str | os.PathLike[str] | None = None
) -> tuple[Path, Path]:
    """Paths of the (images, labels) files :func:`load_mnist` would read, without reading them.

    Raises:
        MNISTNotFoundError: a file is in none of the :func:`search_dirs`.

    Example:
        >>> images_path, labels_path = locate_mnist("test")
        >>> images_path.name.startswith("t10k-images-idx3-ubyte")
        True
    """
    names = _check_split(split)
    dirs = search_dirs(root)
    found = []
    for name in names:
        path, looked = _find(name, dirs)
        if path is None:
            raise MNISTNotFoundError(name, looked)
        found.append(path)
    return found[0], found[1]


# --------------------------------------------------------------------------- reading


def _decompress(path: Path, raw: bytes) -> bytes:
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise MNISTFileError(path, f"cannot be decompressed as gzip ({exc})") from None


@functools.lru_cache(maxsize=8)
def _read_verified(path_str: str, mtime_ns: int, size: int, name: str) -> torch.Tensor:
    """Decoded uint8 tensor of one verified file; cached by (resolved path, mtime, size)."""
    del mtime_ns, size  # only part of the cache key: a rewritten file is read again
    path = Path(path_str)
    data = _decompress(path, path.read_bytes())
    actual = hashlib.md5(data).hexdigest()
    expected = MD5[name]
    if actual != expected:
        raise ChecksumMismatchError(path, name, expected, actual)
    is_images = "images" in name
    arr = parse_idx(
        data, name=str(path), expected_magic=_IMAGES_MAGIC if is_images else _LABELS_MAGIC
    )
    if is_images and tuple(arr.shape[1:]) != _IMAGE_SIZE:
        raise IDXFormatError(path, f"image size {tuple(arr.shape[1:])}, expected {_IMAGE_SIZE}")
    log.debug("read %s (%s, md5 ok)", path, tuple(arr.shape))
    return torch.from_numpy(arr.copy())


def _read(name: str, path: Path, searched: list[Path]) -> torch.Tensor:
    resolved = path.resolve()
    st = resolved.stat()
    try:
        return _read_verified(str(resolved), st.st_mtime_ns, st.st_size, name)
    except MNISTFileError as exc:
        exc.searched = searched
        raise


def load_mnist(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST split as tensors (LeCun, Cortes & Burges, the MNIST database).

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        root: a folder searched first (also ``root/mnist`` and ``root/MNIST/raw``); the
            download target when ``download=True``.
        download: if a file is in none of the :func:`search_dirs`, fetch it from
            :data:`MIRRORS` into ``root`` (or ``$ADVLAB_DATA/mnist``, or the user cache).

    Returns:
        ``(images, labels)``: float32 ``[N, 1, 28, 28]`` in ``[0, 1]`` (pixel / 255) and int64
        ``[N]`` in ``0..9``. Fresh tensors on every call (decoding is cached, so repeated loads
        only pay the uint8 -> float conversion); modify them freely.

    Raises:
        ValueError: unknown split.
        MNISTNotFoundError: a file is missing (the message lists every place looked).
        ChecksumMismatchError: a file was found but its decompressed MD5 is wrong (names the
            file and both MD5s; other copies are deliberately not tried).
        IDXFormatError: a file's IDX header is wrong.

    Example:
        >>> images, labels = load_mnist("test")
        >>> float(images.min()), float(images.max()), labels[:5].tolist()
        (0.0, 1.0, [7, 2, 1, 0, 4])
    """
    names = _check_split(split)
    dirs = search_dirs(root)
    tensors = []
    for name in names:
        path, looked = _find(name, dirs)
        if path is None:
            if not download:
                raise MNISTNotFoundError(
                    name, looked, hint="Pass download=True to fetch it, or set $ADVLAB_DATA."
                )
            target = _download_target(root)
            path = _download_file(name, target, MIRRORS, timeout=60.0, searched=looked)
            looked = looked + ([] if path in looked else [path])
        tensors.append(_read(name, path, looked))
    images_u8, labels_u8 = tensors
    if images_u8.shape[0] != labels_u8.shape[0]:
        raise IDXFormatError(
            Path(names[1]),
            f"{labels_u8.shape[0]} labels for {images_u8.shape[0]} images in split {split!r}",
        )
    images = images_u8.unsqueeze(1).to(torch.float32).div_(255.0)
    labels = labels_u8.to(torch.int64)
    return images, labels


def mnist_dataset(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> TensorDataset:
    """:func:`load_mnist` wrapped in a :class:`torch.utils.data.TensorDataset`.

    Example:
        >>> ds = mnist_dataset("test")
        >>> len(ds), tuple(ds[0][0].shape), int(ds[0][1])
        (10000, (1, 28, 28), 7)
    """
    images, labels = load_mnist(split, root=root, download=download)
    return TensorDataset(images, labels)


def data_checksum(split: str = "train") -> str:
    """A short string identifying the exact data of a split, for checkpoint cards.

    It names the split and the MD5s of its (images, labels) files; :func:`load_mnist` only ever
    returns data whose files match them.

    Example:
        >>> data_checksum("test")
        'mnist-test:md5=2646ac647ad5339dbf082846283269ea,27ae3e4e09519cfbb04c329615203637'
    """
    images, labels = _check_split(split)
    return f"mnist-{split}:md5={MD5[images]},{MD5[labels]}"


# --------------------------------------------------------------------------- download


def _download_target(root: str | os.PathLike[str] | None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser() / "mnist"
    return _cache_dir()


def _fetch(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "advlab (python urllib)"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _download_file(
    name: str, target: Path, mirrors: Sequence[str], timeout: float, searched: list[Path]
) -> Path:
    attempts: list[tuple[str, str]] = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + f"/{name}.gz"
        log.info("downloading %s", url)
        try:
            payload = _fetch(url, timeout)
        except Exception as exc:  # network errors come in many types (URLError, timeout, ...)
            attempts.append((url, f"{type(exc).__name__}: {exc}"))
            log.warning("download of %s failed: %s", url, exc)
            continue
        try:
            data = gzip.decompress(payload)
        except (OSError, EOFError, zlib.error) as exc:
            attempts.append((url, f"not a gzip file ({exc})"))
            continue
        actual = hashlib.md5(data).hexdigest()
        if actual != MD5[name]:
            attempts.append((url, f"MD5 of decompressed bytes {actual}, expected {MD5[name]}"))
            log.warning("%s: bad checksum %s", url, actual)
            continue
        target.mkdir(parents=True, exist_ok=True)
        dest = target / f"{name}.gz"
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.info("saved %s (md5 ok)", dest)
        return dest
    raise MNISTDownloadError(name, searched, attempts)


def download_mnist(
    root: str | os.PathLike[str] | None = None,
    splits: Sequence[str] = ("train", "test"),
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = 60.0,
) -> list[Path]:
    """Download the MNIST gzip files into ``root`` and verify their checksums.

    Files already in ``root`` with the right checksum are kept; a corrupt one is replaced.
    Each file is written atomically (temporary file, then rename).

    Args:
        root: target folder (default: ``$ADVLAB_DATA/mnist`` if set, else the user cache).
        splits: which splits to fetch.
        mirrors: base URLs tried in order (see :data:`MIRRORS`).
        timeout: seconds per request.

    Returns:
        The paths of the files in ``root``.

    Raises:
        MNISTDownloadError: no mirror served a file with the right checksum.

    Example (needs a network, so not run here)::

        download_mnist("~/data/mnist")
    """
    target = _download_target(root)
    paths = []
    for split in splits:
        for name in _check_split(split):
            existing, _ = _find(name, [target])
            if existing is not None:
                try:
                    _read(name, existing, [existing])
                    paths.append(existing)
                    continue
                except MNISTFileError as exc:
                    log.warning("replacing bad file %s: %s", existing, exc.problem)
            path = _download_file(name, target, mirrors, timeout, searched=[target])
            if existing is not None and existing != path:
                existing.unlink()
            paths.append(path)
    return paths
