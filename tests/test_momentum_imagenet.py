"""The ImageNet suite of the momentum reproduction, end to end without weights: random-init
timm models (normalisation inside the wrapper) on a few generated NIPS 2017-style images.

Skipped when timm is not importable (run it in the environment with the ``imagenet`` extra).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

timm = pytest.importorskip("timm")

import torch  # noqa: E402

from advlab._io import bytes_to_state  # noqa: E402
from advlab.data.imagefolder import load_nips17  # noqa: E402
from advlab.experiments.momentum import MomentumConfig, run_momentum  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# timm's tiny test architectures (160x160 inputs): three normal models and one marked as
# adversarially trained, so every table has its rows.
MODELS = ["test_resnet.r160_in1k", "test_efficientnet.r160_in1k", "test_byobnet.r160_in1k",
          "adv:test_vit.r160_in1k"]


def _make_fake_nips17(out: Path, n: int) -> None:
    spec = importlib.util.spec_from_file_location("make_fake_nips17",
                                                  ROOT / "scripts" / "make_fake_nips17.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.make_fake_nips17(out, n=n, size=299, seed=0)


@pytest.fixture(scope="module")
def nips17(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("nips17")
    _make_fake_nips17(d, 4)
    return d


def tiny_cfg(data_dir: Path | None, **kw) -> MomentumConfig:
    base = dict(pretrained=False, data_dir=data_dir and str(data_dir), n_images=4,
                ensemble_images=2, figure_images=2, chunk_size=2, steps=2, ensemble_steps=2,
                mu_grid=(0.0, 1.0), iter_grid=(1, 2), eps_grid=(8 / 255,), batch_size=4)
    base.update(kw)
    return MomentumConfig.preset("quick", "imagenet", **base)


def test_imagenet_suite_runs_end_to_end_on_random_init_timm_models(nips17, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    res = run_momentum(tiny_cfg(nips17), out, cache_dir=cache, progress=False, models=MODELS,
                       threads=1)
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["suite"] == "imagenet" and cfg["pretrained"] is False
    assert abs(cfg["eps"] - 16 / 255) < 1e-12 and cfg["steps"] == 2
    t1 = json.loads((out / "tables" / "table1.json").read_text())
    assert len(t1["rows"]) == 3 * 3 and len(t1["columns"]) == 2 + 4
    assert len(json.loads((out / "tables" / "table2.json").read_text())["rows"]) == 9
    assert len(json.loads((out / "tables" / "table3.json").read_text())["rows"]) == 3
    assert res["models"]["test_vit.r160_in1k"]["adversarial"] is True
    assert res["models"]["test_resnet.r160_in1k"]["n"] == 4
    assert res["attack_calls"] == res["planned"]["attack_units"] > 0
    assert "RANDOM INIT" in (out / "report.md").read_text()

    # adversarial examples are stored as 8-bit images inside the eps-ball of their chunk
    x, y, _ = load_nips17(nips17, size=160)
    from safetensors import safe_open

    files = sorted((cache / "momentum" / "adv").glob("*.safetensors"))
    assert files
    for f in files:
        xa = bytes_to_state(f.read_bytes(), str(f))["x_adv"]
        with safe_open(str(f), framework="pt") as h:
            conf = json.loads(h.metadata()["config"])
        assert xa.dtype == torch.uint8 and conf["store"] == "uint8"
        eps = conf["attack"]["eps"]
        matches = [s for s in (0, 2) if hashlib.sha256(
            x[s:s + 2].numpy().tobytes() + y[s:s + 2].numpy().tobytes()
        ).hexdigest()[:32] == conf["data"]]
        assert len(matches) == 1
        s = matches[0]
        assert float((xa.float() / 255 - x[s:s + 2]).abs().max()) <= eps + 1e-6

    again = run_momentum(tiny_cfg(nips17), tmp_path / "out2", cache_dir=cache, progress=False,
                         models=MODELS, threads=1)
    assert again["attack_calls"] == 0
    assert (tmp_path / "out2" / "tables" / "table1.json").read_text() == \
        (out / "tables" / "table1.json").read_text()


def test_imagenet_suite_needs_data(tmp_path):
    with pytest.raises(ValueError, match="needs data_dir"):
        run_momentum(tiny_cfg(None), tmp_path / "out",
                     cache_dir=tmp_path / "c", progress=False, models=MODELS[:3],
                     threads=1)


@pytest.mark.slow
def test_imagenet_suite_on_the_papers_architectures(nips17, tmp_path):
    """The paper's timm architectures at 299x299, random init (minutes on a CPU)."""
    res = run_momentum(tiny_cfg(nips17, n_images=2, ensemble_images=2, figure_images=2,
                                steps=1, ensemble_steps=1, mu_grid=(1.0,), iter_grid=(1,)),
                       tmp_path / "out", cache_dir=tmp_path / "cache", progress=False,
                       models=["inception_v3.tf_in1k", "inception_v4.tf_in1k",
                               "inception_resnet_v2.tf_in1k",
                               "inception_resnet_v2.tf_ens_adv_in1k"], threads=1)
    assert set(res["models"]) == {"Inc-v3", "Inc-v4", "IncRes-v2", "IncRes-v2ens"}
    assert (tmp_path / "out" / "report.html").is_file()


_TORCHRUN_SCRIPT = """
import sys
from pathlib import Path

sys.path.insert(0, {tests!r})
from test_momentum_imagenet import MODELS, tiny_cfg

from advlab.evaluate.distributed import cleanup, init_from_env
from advlab.experiments.momentum import run_momentum

init_from_env()
work = Path(sys.argv[2])
run_momentum(tiny_cfg(Path(sys.argv[1])), work / "out", cache_dir=work / "cache",
             progress=False, models=MODELS, threads=1)
cleanup()
"""


def test_imagenet_suite_under_torchrun_writes_the_same_tables(nips17, tmp_path):
    """The ImageNet suite trains nothing: under torchrun only the attack units are dealt."""
    import os
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(_TORCHRUN_SCRIPT.format(tests=str(ROOT / "tests")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, launcher in (("one", [sys.executable]),
                           ("two", [sys.executable, "-m", "torch.distributed.run",
                                    "--standalone", "--nproc-per-node", "2"])):
        done = subprocess.run([*launcher, str(script), str(nips17), str(tmp_path / name)],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = tmp_path / "one" / "out" / "tables", tmp_path / "two" / "out" / "tables"
    names = sorted(p.name for p in one.glob("*.csv"))
    assert "table1.csv" in names and names == sorted(p.name for p in two.glob("*.csv"))
    for n in names:
        assert (one / n).read_bytes() == (two / n).read_bytes(), n
