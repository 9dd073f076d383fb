"""Tests of advlab.data.mnist: bundled files, checksums, search order, errors, download."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import struct
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

import advlab.data.mnist as mnist
from advlab.data import (
    MD5,
    MIRRORS,
    SPLITS,
    ChecksumMismatchError,
    IDXFormatError,
    MNISTDownloadError,
    MNISTFileError,
    MNISTNotFoundError,
    data_checksum,
    load_mnist,
    locate_mnist,
    mnist_dataset,
    parse_idx,
    search_dirs,
)

BUNDLED = Path(mnist.__file__).resolve().parents[1] / "_data" / "mnist"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No $ADVLAB_DATA from the caller's shell; the download cache points into tmp_path."""
    monkeypatch.delenv(mnist.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def no_bundle(monkeypatch):
    """Pretend the package was installed without its data files."""
    monkeypatch.setattr(mnist, "_bundled_dir", lambda: None)


def _raw(name: str) -> bytes:
    return gzip.decompress((BUNDLED / f"{name}.gz").read_bytes())


def _write_split(folder: Path, split: str = "test", gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPLITS[split]:
        if gz:
            shutil.copy(BUNDLED / f"{name}.gz", folder / f"{name}.gz")
        else:
            (folder / name).write_bytes(_raw(name))


# --------------------------------------------------------------------------- bundled data


def test_bundled_files_present_with_license_note():
    for names in SPLITS.values():
        for name in names:
            assert (BUNDLED / f"{name}.gz").is_file()
    readme = (BUNDLED / "README.md").read_text()
    assert "CC BY-SA 3.0" in readme and "LeCun" in readme and "Cortes" in readme


def test_bundled_checksums_match_table():
    for names in SPLITS.values():
        for name in names:
            assert hashlib.md5(_raw(name)).hexdigest() == MD5[name]


def test_load_test_split_shapes_dtypes_values():
    images, labels = load_mnist("test")
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (10000,) and labels.dtype == torch.int64
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    # pixels are k / 255 exactly
    assert torch.equal(images * 255, (images * 255).round())


def test_load_train_split():
    images, labels = load_mnist("train")
    assert images.shape == (60000, 1, 28, 28)
    assert labels[:5].tolist() == [5, 0, 4, 1, 9]


def test_repeated_loads_hit_the_cache_and_return_fresh_tensors():
    first, _ = load_mnist("test")
    hits = mnist._read_verified.cache_info().hits
    first.zero_()  # callers may modify what they get
    second, _ = load_mnist("test")
    assert mnist._read_verified.cache_info().hits >= hits + 2
    assert float(second.max()) == 1.0


def test_dataset_and_checksum_string():
    ds = mnist_dataset("test")
    x, y = ds[0]
    assert len(ds) == 10000 and x.shape == (1, 28, 28) and int(y) == 7
    s = data_checksum("train")
    assert MD5["train-images-idx3-ubyte"] in s and MD5["train-labels-idx1-ubyte"] in s
    assert s.startswith("mnist-train")
    assert data_checksum("test") != s


def test_bad_split_names_value():
    with pytest.raises(ValueError, match="'validation'"):
        load_mnist("validation")
    with pytest.raises(ValueError, match="split"):
        data_checksum("val")


# --------------------------------------------------------------------------- search order


def test_raw_and_gzip_give_identical_data(tmp_path):
    _write_split(tmp_path / "raw", gz=False)
    _write_split(tmp_path / "gz", gz=True)
    raw_images, raw_labels = load_mnist("test", root=tmp_path / "raw")
    gz_images, gz_labels = load_mnist("test", root=tmp_path / "gz")
    assert locate_mnist("test", root=tmp_path / "raw")[0].suffix == ""
    assert locate_mnist("test", root=tmp_path / "gz")[0].suffix == ".gz"
    assert torch.equal(raw_images, gz_images) and torch.equal(raw_labels, gz_labels)


def test_raw_preferred_over_gzip_in_same_folder(tmp_path):
    _write_split(tmp_path, gz=True)
    _write_split(tmp_path, gz=False)
    assert locate_mnist("test", root=tmp_path)[0] == tmp_path / "t10k-images-idx3-ubyte"


def test_root_comes_first(tmp_path, monkeypatch):
    _write_split(tmp_path / "root")
    _write_split(tmp_path / "env")
    monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path / "env"))
    assert locate_mnist("test", root=tmp_path / "root")[0].parent == tmp_path / "root"
    dirs = search_dirs(tmp_path / "root")
    assert dirs.index(tmp_path / "root") < dirs.index(tmp_path / "env")
    assert BUNDLED not in dirs  # a folder named explicitly: no fallback to the bundled copy


def test_explicit_folder_without_mnist_fails_naming_what_it_looked_for(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MNISTNotFoundError) as info:
        load_mnist("test", root=tmp_path / "empty")
    msg = str(info.value)
    assert str(tmp_path / "empty" / "t10k-images-idx3-ubyte") in msg
    assert str(BUNDLED) not in msg
    monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(MNISTNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist("test")


@pytest.mark.parametrize("sub", ["", "mnist"])
def test_env_var_honoured(tmp_path, monkeypatch, sub):
    _write_split(tmp_path / sub if sub else tmp_path)
    monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path))
    images_path, labels_path = locate_mnist("test")
    expected = tmp_path / sub if sub else tmp_path
    assert images_path.parent == expected and labels_path.parent == expected
    images, labels = load_mnist("test")
    assert images.shape[0] == 10000


def test_torchvision_layout_under_root(tmp_path):
    _write_split(tmp_path / "MNIST" / "raw")
    assert locate_mnist("test", root=tmp_path)[0].parent == tmp_path / "MNIST" / "raw"


def test_bundled_copy_is_the_default():
    assert locate_mnist("test")[0].parent.resolve() == BUNDLED


# --------------------------------------------------------------------------- errors


def test_corrupt_file_is_rejected_without_fallback(tmp_path):
    data = bytearray(_raw("t10k-images-idx3-ubyte"))
    data[5000] ^= 0xFF
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(bytes(data))
    actual = hashlib.md5(bytes(data)).hexdigest()
    with pytest.raises(ChecksumMismatchError) as info:
        load_mnist("test", root=tmp_path)  # the bundled good copy must NOT be used instead
    err = info.value
    msg = str(err)
    assert isinstance(err, ValueError) and isinstance(err, MNISTFileError)
    assert str(tmp_path / "t10k-images-idx3-ubyte") in msg
    assert MD5["t10k-images-idx3-ubyte"] in msg and actual in msg
    assert err.expected_md5 == MD5["t10k-images-idx3-ubyte"] and err.actual_md5 == actual
    assert str(tmp_path) in msg and "search order" in msg


def test_corrupt_gzip_is_rejected(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"definitely not gzip")
    with pytest.raises(MNISTFileError, match="gzip") as info:
        load_mnist("test", root=tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)


def test_missing_file_lists_every_place_looked(tmp_path, monkeypatch, no_bundle):
    monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(MNISTNotFoundError) as info:
        load_mnist("test", root=tmp_path / "root")
    err = info.value
    msg = str(err)
    assert isinstance(err, FileNotFoundError)
    assert "t10k-images-idx3-ubyte" in msg and "download=True" in msg
    for folder in (
        tmp_path / "root",
        tmp_path / "root" / "mnist",
        tmp_path / "env",
        tmp_path / "env" / "mnist",
    ):
        assert str(folder / "t10k-images-idx3-ubyte") in msg
        assert str(folder / "t10k-images-idx3-ubyte.gz") in msg
    assert err.searched and all(isinstance(p, Path) for p in err.searched)
    cache = tmp_path / "xdg-cache" / "advlab" / "mnist"
    assert str(cache) not in msg  # folders named explicitly: no fallback to the download cache
    monkeypatch.delenv(mnist.ENV_VAR)
    with pytest.raises(MNISTNotFoundError) as info:
        load_mnist("test")
    assert str(cache / "t10k-images-idx3-ubyte") in str(info.value)


def _idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims) + payload


def test_parse_idx_roundtrip_and_header_errors():
    arr = parse_idx(_idx(0x0803, (2, 2, 3), bytes(range(12))), expected_magic=2051)
    assert arr.shape == (2, 2, 3) and arr[1, 1, 2] == 11
    with pytest.raises(IDXFormatError, match=r"magic number 2049 \(0x00000801\), expected 2051"):
        parse_idx(_idx(0x0801, (3,), bytes(3)), expected_magic=2051)
    with pytest.raises(IDXFormatError, match="two zero bytes"):
        parse_idx(b"\x01\x00\x08\x01" + bytes(8))
    with pytest.raises(IDXFormatError, match="need 12 data bytes, file has 11"):
        parse_idx(_idx(0x0803, (2, 2, 3), bytes(11)))
    with pytest.raises(IDXFormatError, match="type code 0x07"):
        parse_idx(b"\x00\x00\x07\x01" + bytes(8))
    with pytest.raises(IDXFormatError, match="at least 4"):
        parse_idx(b"\x00\x00")
    with pytest.raises(IDXFormatError, match="declares 3 dimensions"):
        parse_idx(b"\x00\x00\x08\x03" + bytes(4))
    big = parse_idx(struct.pack(">II", 0x0C01, 2) + struct.pack(">ii", -1, 7))
    assert big.tolist() == [-1, 7]


# --------------------------------------------------------------------------- download


class _FakeServer:
    """Stands in for urllib.request.urlopen, serving the bundled .gz files."""

    def __init__(self, broken_hosts=(), corrupt_hosts=()):
        self.broken_hosts = tuple(broken_hosts)
        self.corrupt_hosts = tuple(corrupt_hosts)
        self.requests: list[str] = []

    def __call__(self, request, timeout=None):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        self.requests.append(url)
        if url.startswith(self.broken_hosts):
            raise urllib.error.URLError("connection refused (fake)")
        payload = (BUNDLED / url.rsplit("/", 1)[1]).read_bytes()
        if url.startswith(self.corrupt_hosts):
            payload = gzip.compress(b"\x00\x00\x08\x01" + bytes(16))
        return io.BytesIO(payload)


def test_download_into_root_with_fake_urlopen(tmp_path, monkeypatch, no_bundle):
    server = _FakeServer()
    monkeypatch.setattr(urllib.request, "urlopen", server)
    target = tmp_path / "dl"
    images, labels = load_mnist("test", root=target, download=True)
    assert images.shape == (10000, 1, 28, 28) and labels[0] == 7
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{n}.gz" for n in SPLITS["test"])
    assert all(u.startswith(MIRRORS[0]) for u in server.requests)
    assert len(server.requests) == 2
    # now found locally: no more requests
    load_mnist("test", root=target, download=True)
    assert len(server.requests) == 2


def test_download_falls_back_to_next_mirror(tmp_path, monkeypatch, no_bundle):
    server = _FakeServer(broken_hosts=[MIRRORS[0]], corrupt_hosts=[MIRRORS[1]])
    monkeypatch.setattr(urllib.request, "urlopen", server)
    images, _ = load_mnist("test", root=tmp_path, download=True)
    assert images.shape[0] == 10000
    assert any(u.startswith(MIRRORS[2]) for u in server.requests)


def test_download_failure_reports_each_mirror(tmp_path, monkeypatch, no_bundle):
    server = _FakeServer(corrupt_hosts=MIRRORS)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    with pytest.raises(MNISTDownloadError) as info:
        load_mnist("test", root=tmp_path, download=True)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for mirror in MIRRORS:
        assert mirror in msg
    assert "expected " + MD5["t10k-images-idx3-ubyte"] in msg
    assert not list(tmp_path.glob("*.gz"))  # nothing bad written


def test_download_mnist_replaces_a_corrupt_copy(tmp_path, monkeypatch):
    server = _FakeServer()
    monkeypatch.setattr(urllib.request, "urlopen", server)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + bytes(4))
    _write_split(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    paths = mnist.download_mnist(tmp_path, splits=["test"])
    assert [p.name for p in paths] == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert not (tmp_path / "t10k-labels-idx1-ubyte").exists()
    assert len(server.requests) == 1  # the good images file was kept
    assert load_mnist("test", root=tmp_path)[1][0] == 7
