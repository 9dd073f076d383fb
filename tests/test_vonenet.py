"""The VOneNet-FGSM reproduction on a tiny configuration: every artefact, consistent."""

from __future__ import annotations

import json
import re
import textwrap

import pytest

from advlab.experiments.vonenet import DISPLAY, VoneNetConfig, run_vonenet
from conftest import run_one_and_two

TINY = dict(models=("mnist-cnn", "vone-mnist-cnn"), train_epochs=1, train_size=400,
            heavy_train_size=200, eval_size=64, finetune_epochs=2, finetune_train_size=64,
            finetune_test_size=32, sound_size=12, noise_draws=2, eot_samples=2, pgd_steps=2,
            square_queries=8, sweep=(0.0, 0.2, 0.35), sweep_steps=2, grid_images=4,
            vone_overrides={"simple_channels": 4, "complex_channels": 4})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vonenet")
    cfg = VoneNetConfig.preset("quick", **TINY)
    first = run_vonenet(cfg, root / "out", cache_dir=root / "cache", progress=False)
    second = run_vonenet(cfg, root / "out2", cache_dir=root / "cache", progress=False)
    return cfg, root, first, second


def test_every_artefact_exists(run):
    _, root, first, _ = run
    out = root / "out"
    for name in ("as_reported", "mechanism", "final", "attacks", "sweep", "finetune", "audit"):
        assert (out / f"{name}.csv").stat().st_size > 0
        assert (out / f"{name}.json").stat().st_size > 0
    for fig in ("accuracy_bar", "eps_sweep", "finetune_curves", "grid_mnist-cnn",
                "grid_vone-mnist-cnn"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 5000
    assert (out / "report.md").exists() and (out / "config.json").exists()
    assert first["report"].endswith("report.html")


def test_html_references_every_figure_and_table(run):
    _, root, _, _ = run
    html = (root / "out" / "report.html").read_text()
    figures = sorted(p.name for p in (root / "out" / "figures").glob("*.png"))
    for name in figures:
        assert f'src="figures/{name}"' in html, name
    assert html.count("<table") == 7


def test_tables_have_the_expected_rows(run):
    cfg, root, _, _ = run
    out = root / "out"
    rep = json.loads((out / "as_reported.json").read_text())
    assert [r[0] for r in rep["rows"]] == [DISPLAY[m] for m in cfg.models]
    final = json.loads((out / "final.json").read_text())
    assert len(final["rows"]) == 2 * len(cfg.models)  # base and fine-tuned models
    sweep = json.loads((out / "sweep.json").read_text())
    assert len(sweep["rows"]) == len(cfg.models) and len(sweep["rows"][0]) == 1 + len(cfg.sweep)
    ft = json.loads((out / "finetune.json").read_text())
    assert len(ft["rows"]) == len(cfg.models)
    audit = json.loads((out / "audit.json").read_text())
    assert {r[0] for r in audit["rows"]} == {"VOne-CNN (student-exact)",
                                             "VOne-CNN (finite-gradient twin)"}
    assert len(audit["rows"]) >= 16


def test_markdown_numbers_equal_the_json(run):
    _, root, _, _ = run
    out = root / "out"
    md_rows = [[c.strip().replace("\\", "") for c in line.strip().strip("|").split(" | ")]
               for line in (out / "report.md").read_text().splitlines()
               if line.startswith("| ") and not line.startswith("| ---")]
    intervals = 0
    for name in ("as_reported", "mechanism", "final", "attacks", "sweep", "finetune"):
        table = json.loads((out / f"{name}.json").read_text())
        for raw, row in zip(table["rows"], table["formatted"], strict=True):
            assert [c.strip() for c in row] in md_rows, (name, row)
            for value, text in zip(raw, row, strict=True):  # the text is the number, rounded
                m = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", text)
                if m:  # a value with its 95 % interval: "v [lo, hi]"
                    v, lo, hi = (float(g) for g in m.groups())
                    assert lo - 0.05 <= v <= hi + 0.05, text
                    intervals += 1
                    text = m.group(1)
                if isinstance(value, float):
                    assert float(text) == pytest.approx(value, abs=0.005 + 1e-9)
    assert intervals > 20  # every accuracy carries its interval


def test_numbers_are_consistent(run):
    _, _, first, _ = run
    for r in first["as_reported"].values():
        for key in ("clean", "fgsm", "fgsm_unclipped", "fgsm_finite"):
            assert 0 <= r[key]["lo"] <= r[key]["acc"] <= r[key]["hi"] <= 100, key
        assert r["out_of_box_unclipped"] > 0  # only the unclipped variant leaves [0, 1]
    plain = first["as_reported"]["mnist-cnn"]
    assert plain["nonfinite_entries"] == 0 and plain["fgsm_finite"] == plain["fgsm"]
    for label, s in first["sound"].items():
        assert 0 <= s["worst_mean"] <= s["clean_mean"] + 1e-9 or s["randomized"], label
        assert set(s["attacks"]) >= {"FGSM", "PGD", "Square", "random noise"}
        # never weaker than the best single attack
        assert s["worst_mean"] <= min(a["acc_mean"] for a in s["attacks"].values()) + 1e-9
    assert set(first["sound"]["vone-mnist-cnn"]["attacks"]) >= {"PGD, noise fixed", "transfer"}


def test_second_run_recomputes_nothing(run):
    _, _, first, second = run
    assert first["result_computations"] > 0 and first["tensor_computations"] > 0
    assert second["result_computations"] == 0 and second["tensor_computations"] == 0
    assert second["sound"] == first["sound"] and second["as_reported"] == first["as_reported"]


# -- torchrun ----------------------------------------------------------------------------------
#: ``advlab reproduce vonenet-fgsm --quick`` on the tiny configuration
CLI_SCRIPT = textwrap.dedent('''
    import sys
    import advlab.cli
    import test_vonenet as tv
    from advlab.experiments.vonenet import VoneNetConfig

    quick = VoneNetConfig.preset
    VoneNetConfig.preset = staticmethod(lambda name, **kw: quick(name, **{**tv.TINY, **kw}))
    sys.exit(advlab.cli.main(["reproduce", "vonenet-fgsm", "--quick", "--out", "out",
                              "--cache", "cache", "--no-progress"]))
''')


def test_torchrun_two_processes_write_the_same_files(tmp_path):
    """``torchrun --nproc-per-node 2 -m advlab reproduce vonenet-fgsm`` deals whole work items
    (a model's training, fine-tuning, as-reported, sound, sweep or audit evaluation) to the
    ranks, so every noise draw is the one-process draw: the same tables, figures and config,
    byte for byte (separate caches; the same relative paths, which the cache keys hold)."""
    out1, out2, a, b = run_one_and_two(tmp_path, CLI_SCRIPT)
    assert sorted(a) == sorted(b)
    assert {"final.csv", "audit.json", "figures/eps_sweep.png", "config.json"} <= set(a)
    exact = [n for n in a if n not in ("results.json", "report.md", "report.html")]
    assert [n for n in exact if a[n] != b[n]] == []

    def timeless(text: bytes) -> list[str]:  # the run time is the only line that may differ
        return [line for line in text.decode().splitlines() if "Run time: " not in line]

    for name in ("report.md", "report.html"):
        assert timeless(a[name]) == timeless(b[name]), name
    r1, r2 = json.loads(a["results.json"]), json.loads(b["results.json"])
    for r in (r1, r2):  # how long the run and each fine-tuning epoch took
        assert r.pop("seconds") > 0
        for c in r["curves"].values():
            for row in c:
                row.pop("seconds")
    assert r1 == r2  # computations summed over the ranks: each item computed once
    assert r2["result_computations"] > 0 and r2["tensor_computations"] > 0
    # rank 0 alone prints, and nothing lands outside out/ and the cache
    assert out1.count("\nreport: ") == out2.count("\nreport: ") == 1
    assert out1.count("\ndone in ") == out2.count("\ndone in ") == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["cache", "out"]


def _rate(acc: float, half: float = 3.0) -> dict[str, float]:
    return {"acc": acc, "lo": max(0.0, acc - half), "hi": min(100.0, acc + half), "n": 500}


def _measured(fgsm: float, finite: float, nan: float, moved: float, p: float) -> dict:
    return {"fgsm": _rate(fgsm), "fgsm_finite": _rate(finite), "nonfinite_entries": nan,
            "moved_pixels": moved, "unchanged_images": 0.5, "paired": {"mcnemar_p": p}}


@pytest.mark.parametrize("measured, sound, expect, mechanism", [
    (_measured(94.0, 1.0, 0.93, 0.07, 1e-30), 0.0, "reproduces .within 10 points", True),
    (_measured(60.0, 1.0, 0.93, 0.07, 1e-30), 0.0, "does not reproduce", True),
    (_measured(94.0, 93.0, 0.93, 0.07, 0.6), 0.0, "reproduces", False),  # no drop: not shown
    (_measured(94.0, 1.0, 0.05, 0.95, 1e-30), 0.0, "reproduces", False),  # gradients finite
    (_measured(94.0, 90.0, 0.0, 1.0, 0.3), 90.0, "reproduces", False),
])
def test_claims_name_the_mechanism_only_when_the_numbers_show_it(measured, sound, expect,
                                                                 mechanism):
    from advlab.experiments.vonenet.claims import _claims

    cfg = VoneNetConfig.preset("full")
    plain = {"fgsm": _rate(0.6)}
    worst = {"worst_mean": sound, "worst_ci": {"lo": max(0, sound - 2), "hi": sound + 2}}
    lines = _claims(cfg, {"vone-mnist-cnn": measured, "mnist-cnn": plain},
                    {"vone-mnist-cnn": worst}, {})
    assert re.search(expect, lines[0]), lines[0]
    assert lines[1].startswith("Why: ") == mechanism, lines[1]
    if mechanism:
        assert "93.0 % of the input-gradient entries are NaN" in lines[1]
        assert "sign(NaN) = 0" in lines[1] and "down to 1.0 %" in lines[1]
    assert ("claim survives" in lines[2]) == (sound >= 84)
    assert lines[-1].endswith("(holds).")
    assert any("look for masking" in line for line in lines) == (sound > 88)
    assert not any(line.startswith("Smoke-level") for line in lines)


def test_quick_claims_are_labelled_smoke_level():
    from advlab.experiments.vonenet.claims import _claims

    cfg = VoneNetConfig.preset("quick")
    lines = _claims(cfg, {"mnist-cnn": {"fgsm": _rate(3.0)}}, {}, {})
    assert lines[0].startswith("Smoke-level verdicts (--quick")


def test_student_fgsm_shows_the_nan_mechanism_on_the_student_bank():
    """The student's exact bank (256 + 256, untrained weights: the NaN pattern depends only
    on the bank and the image) on real MNIST digits: most gradient entries are NaN, the
    as-reported FGSM moves few pixels; its finite twin moves them all."""
    import torch

    from advlab.attacks import NonFiniteGradientWarning
    from advlab.experiments.vonenet.mechanism import student_fgsm
    from advlab.models import create
    from advlab.train import load_split

    torch.manual_seed(0)
    model = create("vone-mnist-mlp", preset="report").eval()
    x, y = load_split("test", 12, None, "cpu")
    with pytest.warns(NonFiniteGradientWarning, match="NaN/inf entries; nonfinite='warn'"):
        r = student_fgsm(model, x, y, 0.35, 0, lambda m, s: m.reseed_noise(s))
    assert r["nonfinite_entries"] > 0.8 and r["nonfinite_images"] == 1.0
    assert r["moved_pixels"] < 0.2
    assert r["fgsm_finite"] is not None and r["clean"]["n"] == 12
    assert set(r["paired"]) == {"reported_only", "finite_only", "mcnemar_p"}


def test_as_reported_is_the_students_clipped_fgsm():
    """The listing's clamp(x + eps * sign(grad), 0, 1), stepping by sign(NaN) = 0 where the
    student's model has NaN gradients (their code did; advlab's attacks otherwise refuse)."""
    atk = VoneNetConfig.preset("quick").as_reported_attack()
    assert (atk.name, atk.eps, atk.steps, atk.clip, atk.nonfinite) == ("fgsm", 0.35, 1, True,
                                                                       "warn")
    assert not atk.random_start and atk.eot_samples == 1 and atk.loss == "ce"
    assert VoneNetConfig.preset("standard").vone_preset == "report"
