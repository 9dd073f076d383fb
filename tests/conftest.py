"""Shared tiny models and data for the tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

# One intra-op thread: the tiny models gain nothing from more, two threads on a busy 2-core
# machine run several times slower than one, and the single-process results the torchrun
# tests compare against must use the thread count torchrun gives its workers (1).
torch.set_num_threads(1)


class TinyCNN(nn.Module):
    """A small CNN on 1x8x8 inputs with BatchNorm and Dropout (so train/eval mode matters)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(8 * 4 * 4, 32),
                                  nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def blobs(n: int, seed: int = 0, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 1x8x8 images in [0, 1]: one random prototype per class plus noise."""
    g = torch.Generator().manual_seed(1234)
    protos = torch.rand(num_classes, 1, 8, 8, generator=g)
    g2 = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g2)
    x = (protos[y] + 0.15 * torch.randn(n, 1, 8, 8, generator=g2)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="session")
def trained_cnn() -> TinyCNN:
    torch.manual_seed(0)
    model = TinyCNN()
    x, y = blobs(2000, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(4):
        for i in range(0, 2000, 100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 100]), y[i:i + 100]).backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


@pytest.fixture()
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return blobs(16, seed=7)
