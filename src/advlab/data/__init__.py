"""Datasets for advlab: MNIST from checksummed IDX files (bundled, offline first).

Example:
    >>> from advlab.data import load_mnist, data_checksum
    >>> images, labels = load_mnist("test")
    >>> images.shape[0] == labels.shape[0] == 10000
    True
"""

from advlab.data.mnist import (
    ENV_VAR,
    MD5,
    MIRRORS,
    SPLITS,
    ChecksumMismatchError,
    IDXFormatError,
    MNISTDownloadError,
    MNISTFileError,
    MNISTNotFoundError,
    data_checksum,
    download_mnist,
    load_mnist,
    locate_mnist,
    mnist_dataset,
    parse_idx,
    search_dirs,
)

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
