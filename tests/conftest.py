"""Shared tiny models and data for the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


class NoisyFront(nn.Module):
    """Gaussian noise of standard deviation ``sigma`` added to the input on every call."""

    def __init__(self, net: nn.Module, sigma: float) -> None:
        super().__init__()
        self.net = net
        self.sigma = sigma
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x):
        return self.net(x + self.sigma * torch.randn(x.shape, generator=self.gen))


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


SRC = Path(__file__).resolve().parents[1] / "src"


def run_script(script: Path, cwd: Path, nproc: int) -> str:
    """Run ``script`` in ``cwd`` as one process, or as ``nproc`` torchrun processes (one thread
    each, no inherited rank variables); returns its stdout and asserts it succeeded."""
    cwd.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", ADVLAB_PROGRESS="0",
               PYTHONPATH=os.pathsep.join([str(SRC), str(Path(__file__).parent)]))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    launch = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone",
                                    "--nproc-per-node", str(nproc)]
    proc = subprocess.run([sys.executable, *launch, str(script)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def tree(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` (relative path -> bytes)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def run_one_and_two(tmp_path: Path, script_text: str) -> tuple[str, str, dict, dict]:
    """Run a script once as one process and once as 2 torchrun processes (in ``one/`` and
    ``two/`` under ``tmp_path``); returns both stdouts and both ``out/`` trees."""
    script = tmp_path / "reproduce.py"
    script.write_text(script_text)
    out1 = run_script(script, tmp_path / "one", 1)
    out2 = run_script(script, tmp_path / "two", 2)
    return out1, out2, tree(tmp_path / "one" / "out"), tree(tmp_path / "two" / "out")
