"""ImageNet suite: timm wrappers, the NIPS 2017 / image-folder loaders, the fake data script.

Needs timm (``pip install 'advlab[imagenet]'``); the whole module is skipped without it.
Models are random-init (weights cannot be downloaded here): the checks are about shapes,
normalisation, labels and the attack's constraints, not accuracy.

Timing note (2-core CPU shared with other jobs, torch 2.14.1, timm 1.0.31, random init,
batch 2 at 299x299): Inc-v3 forward about 0.4 s and forward + input-gradient backward about
0.7 s when the machine was nearly idle (load ~3), but 3-6 s and 8-19 s at load 7-9 from other
jobs; Inception-ResNet-v2 costs 2.5-3.5x Inc-v3. This file took 23 s near idle and 120-145 s
at load 7-8. A 10-step MI-FGSM with Inc-v3 on the 1000 NIPS 2017 images is 500 x 10
forward+backward passes of batch 2: about an hour on an idle 2-core machine, so use
``limit`` for anything interactive. ``test_timing_inc_v3`` records the figure of the current
run as the junit properties ``inc_v3_fwd_bwd_batch2_s`` (wall) and ``..._cpu_s``.
"""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

timm = pytest.importorskip(
    "timm", reason="the ImageNet suite needs timm: pip install 'advlab[imagenet]'")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from advlab.attacks import MIFGSM  # noqa: E402
from advlab.data.imagefolder import (  # noqa: E402
    DatasetFormatError,
    ImageSet,
    load_image_folder,
    load_nips17,
)
from advlab.models import create, list_models, model_info  # noqa: E402
from advlab.models.imagenet import (  # noqa: E402
    MISSING_PAPER_MODELS,
    PAPER_MODELS,
    TimmClassifier,
    create_timm,
    imagenet_to_nips17,
    nips17_to_imagenet,
    register_timm,
)
from advlab.models.registry import unregister  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_fake_nips17.py"
EPS = 16 / 255


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inc_v3() -> TimmClassifier:
    torch.manual_seed(0)
    return create("timm:inception_v3.tf_in1k")  # through the registry


@pytest.fixture(scope="module")
def x2() -> torch.Tensor:
    return torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def fake_nips17(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nips17")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), "--n", "4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


@pytest.fixture()
def nips_copy(fake_nips17, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(fake_nips17, dst)
    return dst


# -- the paper's models and the registry ---------------------------------------------------

def test_paper_models_match_reference_and_timm():
    assert PAPER_MODELS == {
        "Inc-v3": "inception_v3.tf_in1k",
        "Inc-v4": "inception_v4.tf_in1k",
        "IncRes-v2": "inception_resnet_v2.tf_in1k",
        "Inc-v3adv": "inception_v3.tf_adv_in1k",
        "IncRes-v2ens": "inception_resnet_v2.tf_ens_adv_in1k",
    }
    assert set(MISSING_PAPER_MODELS) == {"Inc-v3ens3", "Inc-v3ens4", "Res-152"}
    pretrained = set(timm.list_pretrained())
    for name in PAPER_MODELS.values():
        assert name in pretrained
        info = model_info(f"timm:{name}")
        cfg = timm.get_pretrained_cfg(name)
        # the registry's static metadata agrees with timm's config
        assert info.input_shape == tuple(cfg.input_size) == (3, 299, 299)
        assert info.num_classes == cfg.num_classes == 1000
        assert tuple(cfg.mean) == tuple(cfg.std) == (0.5, 0.5, 0.5)


def test_registry_import_does_not_need_timm():
    code = (
        "import sys; sys.modules['timm'] = None\n"
        "import advlab.models.imagenet, advlab.data.imagefolder\n"
        "from advlab.models import create, list_models\n"
        "assert 'timm:inception_v3.tf_in1k' in list_models()\n"
        "try:\n"
        "    create('timm:inception_v3.tf_in1k')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'advlab[imagenet]'" in proc.stdout


def test_missing_timm_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match=r"advlab\[imagenet\]"):
        create_timm("inception_v3.tf_in1k")


def test_unknown_name_and_bad_tag():
    with pytest.raises(ValueError, match="did you mean 'inception_v3"):
        create_timm("inceptionv3")
    with pytest.raises(ValueError, match="no model 'inception_v3.nope'"):
        create_timm("inception_v3.nope")
    with pytest.raises(TypeError, match="pretrained must be True or False, got 'False'"):
        create_timm("inception_v3.tf_in1k", pretrained="False")


def test_pretrained_download_failure_is_explained(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="checkpoint_path") as info:
        create_timm("inception_v3.tf_in1k", pretrained=True)
    assert "inception_v3.tf_in1k" in str(info.value)


# -- the wrapper ---------------------------------------------------------------------------

def _check_normalises(model: TimmClassifier, x: torch.Tensor) -> None:
    """One forward: the network inside receives exactly (x - mean) / std from timm's config,
    and the wrapper returns the network's 1000 logits."""
    cfg = timm.data.resolve_model_data_config(model.model)
    mean = torch.tensor(cfg["mean"]).reshape(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).reshape(1, 3, 1, 1)
    assert model.input_size == tuple(cfg["input_size"])
    seen: dict[str, torch.Tensor] = {}

    def grab_in(module, args):
        seen["input"] = args[0].detach().clone()

    def grab_out(module, args, out):
        seen["output"] = out.detach().clone()

    hooks = [model.model.register_forward_pre_hook(grab_in),
             model.model.register_forward_hook(grab_out)]
    try:
        with torch.no_grad():
            wrapped = model(x)
    finally:
        for h in hooks:
            h.remove()
    torch.testing.assert_close(seen["input"], (x - mean) / std)
    assert wrapped.shape == (x.shape[0], 1000)
    torch.testing.assert_close(wrapped, seen["output"])


def test_inc_v3_wrapper_normalises(inc_v3, x2):
    assert isinstance(inc_v3, TimmClassifier)
    assert not inc_v3.training
    assert inc_v3.registry_name == "timm:inception_v3.tf_in1k"
    torch.testing.assert_close(inc_v3.normalize(x2), 2 * x2 - 1)  # TF Inception: [-1, 1]
    _check_normalises(inc_v3, x2)
    # mean/std are not part of the weights
    assert not any(k in ("mean", "std") for k in inc_v3.state_dict())


def test_second_paper_model_normalises(x2):
    torch.manual_seed(0)
    model = create_timm("inception_resnet_v2.tf_ens_adv_in1k")
    assert model.num_classes == 1000
    _check_normalises(model, x2)


def test_imagenet_stats_model_and_checkpoint_path(tmp_path):
    # a small timm model with ImageNet mean/std (not 0.5) and 176 px input
    torch.manual_seed(0)
    model = create_timm("resnet10t.c3_in1k")
    assert model.input_size == (3, 176, 176)
    torch.testing.assert_close(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    x = torch.rand(2, 3, 176, 176, generator=torch.Generator().manual_seed(2))
    _check_normalises(model, x)
    path = tmp_path / "weights.pth"
    torch.save(model.model.state_dict(), path)
    torch.manual_seed(123)
    again = create_timm("resnet10t.c3_in1k", checkpoint_path=str(path))
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    with pytest.raises(FileNotFoundError, match="checkpoint_path .*nope.pth"):
        create_timm("resnet10t.c3_in1k", checkpoint_path=tmp_path / "nope.pth")
    torch.save({"bogus": torch.zeros(1)}, tmp_path / "bogus.pth")
    with pytest.raises(RuntimeError, match="could not load checkpoint .*bogus.pth"):
        create_timm("resnet10t.c3_in1k", checkpoint_path=tmp_path / "bogus.pth")


def test_register_timm_reads_config_lazily():
    key = register_timm("resnet10t.c3_in1k")
    try:
        assert key in list_models()
        assert model_info(key).input_shape == (3, 176, 176)
        assert register_timm("resnet10t.c3_in1k") == key  # idempotent
    finally:
        unregister(key)


def test_wrong_input_size_is_a_clear_error(inc_v3):
    with pytest.raises(ValueError, match=r"\[N, 3, 299, 299\].*got \[1, 3, 224, 224\]"):
        inc_v3(torch.rand(1, 3, 224, 224))
    with pytest.raises(ValueError, match="inception_v3.tf_in1k expects"):
        inc_v3(torch.rand(3, 299, 299))
    with pytest.raises(ValueError, match="std must be > 0"):
        TimmClassifier(torch.nn.Identity(), (0.5,) * 3, (0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="one value per channel"):
        TimmClassifier(torch.nn.Identity(), (0.5,) * 2, (0.5,) * 3)


def test_mifgsm_through_wrapper_stays_in_ball_and_box(inc_v3, x2):
    y = torch.tensor([3, 500])
    x_before = x2.clone()
    x_adv = MIFGSM(eps=EPS, steps=2)(inc_v3, x2, y)
    assert x_adv.shape == x2.shape
    assert (x_adv - x2).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x2).abs().max() > EPS / 4  # it did move
    assert torch.equal(x2, x_before)
    assert not inc_v3.training
    assert all(p.grad is None for p in inc_v3.parameters())


def test_timing_inc_v3(inc_v3, x2, record_property):
    """Measure one forward+backward (input gradient) of Inc-v3 at batch 2; see module doc."""
    xi = x2.clone().requires_grad_(True)
    t0, c0 = time.perf_counter(), time.process_time()
    loss = torch.nn.functional.cross_entropy(inc_v3(xi), torch.tensor([0, 1]))
    (g,) = torch.autograd.grad(loss, xi)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    record_property("inc_v3_fwd_bwd_batch2_s", round(seconds, 3))
    record_property("inc_v3_fwd_bwd_batch2_cpu_s", round(cpu, 3))
    assert g.shape == x2.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    assert math.isfinite(seconds)


# -- labels ----------------------------------------------------------------------------------

def test_label_offset_1001_to_1000():
    assert nips17_to_imagenet(torch.tensor([1, 2, 1000])).tolist() == [0, 1, 999]
    assert imagenet_to_nips17(torch.tensor([0, 999])).tolist() == [1, 1000]
    assert nips17_to_imagenet(imagenet_to_nips17(7)) == 7
    with pytest.raises(ValueError, match="background"):
        nips17_to_imagenet(torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"\[1, 1000\].*1001"):
        nips17_to_imagenet(1001)
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        imagenet_to_nips17(1000)
    with pytest.raises(TypeError, match="integers"):
        nips17_to_imagenet(torch.tensor([1.0]))


# -- NIPS 2017 loader ----------------------------------------------------------------------

def test_fake_nips17_loader(fake_nips17):
    rows = _csv_rows(fake_nips17 / "images.csv")
    assert len(rows) == 4 and len(list((fake_nips17 / "images").glob("*.png"))) == 4
    data = load_nips17(fake_nips17)
    assert isinstance(data, ImageSet)
    x, y, ids = data  # unpacks as a triple
    assert x.shape == (4, 3, 299, 299) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.dtype == torch.int64
    assert ids == [r["ImageId"] for r in rows]
    assert y.tolist() == [int(r["TrueLabel"]) - 1 for r in rows]  # 1001 -> 1000 classes
    assert data.target.tolist() == [int(r["TargetClass"]) - 1 for r in rows]
    assert (data.target != y).all()
    png = np.asarray(Image.open(fake_nips17 / "images" / f"{ids[0]}.png"))
    assert torch.equal((x[0] * 255).round().to(torch.uint8).permute(1, 2, 0),
                       torch.from_numpy(png.copy()))
    x_lim, y_lim, ids_lim = load_nips17(fake_nips17, limit=2)
    assert x_lim.shape[0] == 2 and ids_lim == ids[:2] and torch.equal(y_lim, y[:2])
    assert load_nips17(fake_nips17, size=64, limit=1).x.shape == (1, 3, 64, 64)


def test_nips17_missing_column(nips_copy):
    rows = _csv_rows(nips_copy / "images.csv")
    _write_csv(nips_copy / "images.csv", rows, ["ImageId", "TargetClass"])
    with pytest.raises(DatasetFormatError, match=r"images\.csv.*lacks column\(s\) TrueLabel"):
        load_nips17(nips_copy)


def test_nips17_without_target_column(nips_copy):
    rows = _csv_rows(nips_copy / "images.csv")
    _write_csv(nips_copy / "images.csv", rows, ["ImageId", "TrueLabel"])
    data = load_nips17(nips_copy, size=32)
    assert data.target is None and data.y.tolist() == [int(r["TrueLabel"]) - 1 for r in rows]


def test_nips17_missing_image(nips_copy):
    victim = _csv_rows(nips_copy / "images.csv")[2]["ImageId"]
    (nips_copy / "images" / f"{victim}.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"1 image.*missing.*{victim}.png"):
        load_nips17(nips_copy)


def test_nips17_bad_labels_and_duplicates(nips_copy):
    csv_path = nips_copy / "images.csv"
    rows = _csv_rows(csv_path)
    cols = list(rows[0])
    bad = [dict(r) for r in rows]
    bad[1]["TrueLabel"] = "0"
    _write_csv(csv_path, bad, cols)
    with pytest.raises(DatasetFormatError, match=r"images\.csv:3: TrueLabel.*background.*got 0"):
        load_nips17(nips_copy)
    bad[1]["TrueLabel"] = "cat"
    _write_csv(csv_path, bad, cols)
    with pytest.raises(DatasetFormatError, match="must be an integer, got 'cat'"):
        load_nips17(nips_copy)
    _write_csv(csv_path, rows + rows[:1], cols)
    with pytest.raises(DatasetFormatError, match="duplicate ImageId"):
        load_nips17(nips_copy)


def test_nips17_image_size_policy(nips_copy):
    image_id = _csv_rows(nips_copy / "images.csv")[0]["ImageId"]
    path = nips_copy / "images" / f"{image_id}.png"
    # 400x299: grey centre, black margins -> the centre crop keeps only the grey part
    arr = np.zeros((299, 400, 3), np.uint8)
    arr[:, 50:349] = 128
    Image.fromarray(arr).save(path)
    with pytest.raises(DatasetFormatError, match=f"{image_id}.png.*400x299.*expected 299x299"):
        load_nips17(nips_copy, limit=1, resize=False)
    x = load_nips17(nips_copy, limit=1).x
    assert x.shape == (1, 3, 299, 299)
    assert torch.all((x * 255).round() == 128)
    # unreadable file
    path.write_bytes(b"not a png")
    with pytest.raises(DatasetFormatError, match=f"cannot read image.*{image_id}.png"):
        load_nips17(nips_copy, limit=1)


def test_nips17_no_csv_and_bad_arguments(tmp_path, fake_nips17):
    with pytest.raises(FileNotFoundError, match="images.csv.*dev_dataset.csv"):
        load_nips17(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_nips17(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="size must be a positive integer"):
        load_nips17(fake_nips17, size=0)
    with pytest.raises(ValueError, match="limit must be None or an integer >= 1"):
        load_nips17(fake_nips17, limit=0)


def test_script_rejects_bad_arguments(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--n", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--n" in proc.stderr


# -- ImageNet-style folder -----------------------------------------------------------------

def _folder(root: Path) -> Path:
    specs = {"b_dog": [(40, 30, "RGB"), (32, 32, "L")], "a_cat": [(32, 32, "RGBA")],
             "c_fox": [(50, 50, "RGB"), (32, 32, "RGB"), (32, 32, "RGB")]}
    for cls, imgs in specs.items():
        (root / cls).mkdir(parents=True)
        for i, (w, h, mode) in enumerate(imgs):
            Image.new(mode, (w, h), color=(i * 40,) * len(mode)).save(root / cls / f"{i}.png")
    (root / "a_cat" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_labels_order_and_limit(tmp_path):
    root = _folder(tmp_path / "folder")
    x, y, ids = load_image_folder(root, size=32)
    assert x.shape == (6, 3, 32, 32)
    assert ids == ["a_cat/0.png", "b_dog/0.png", "b_dog/1.png", "c_fox/0.png", "c_fox/1.png",
                   "c_fox/2.png"]
    assert y.tolist() == [0, 1, 1, 2, 2, 2]  # sorted folder names
    # limit is round-robin over classes
    _, y3, ids3 = load_image_folder(root, size=32, limit=4)
    assert ids3 == ["a_cat/0.png", "b_dog/0.png", "c_fox/0.png", "b_dog/1.png"]
    assert y3.tolist() == [0, 1, 2, 1]
    mapped = load_image_folder(root, size=32, class_to_idx={"a_cat": 281, "b_dog": 207,
                                                            "c_fox": 277})
    assert mapped.y.tolist() == [281, 207, 207, 277, 277, 277]


def test_image_folder_errors(tmp_path):
    root = _folder(tmp_path / "folder")
    with pytest.raises(DatasetFormatError, match="not in class_to_idx: 'c_fox'"):
        load_image_folder(root, size=32, class_to_idx={"a_cat": 0, "b_dog": 1})
    with pytest.raises(DatasetFormatError, match=r"b_dog.0\.png.*40x30.*expected 32x32"):
        load_image_folder(root, size=32, resize=False)
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "x.png")
    with pytest.raises(DatasetFormatError, match="no class subfolders.*load_nips17"):
        load_image_folder(flat, size=8)
