"""The VOneNet-FGSM reproduction on a tiny configuration: every artefact, consistent."""

from __future__ import annotations

import json

import pytest

from advlab.experiments.vonenet import DISPLAY, VoneNetConfig, run_vonenet

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
    for name in ("as_reported", "final", "attacks", "sweep", "finetune", "audit"):
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
    assert html.count("<table") == 6


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
    assert {r[0] for r in audit["rows"]} == {"VOne-CNN"} and len(audit["rows"]) >= 8


def test_markdown_numbers_equal_the_json(run):
    _, root, _, _ = run
    out = root / "out"
    md_rows = [[c.strip().replace("\\", "") for c in line.strip().strip("|").split(" | ")]
               for line in (out / "report.md").read_text().splitlines()
               if line.startswith("| ") and not line.startswith("| ---")]
    for name in ("as_reported", "final", "attacks", "sweep", "finetune"):
        table = json.loads((out / f"{name}.json").read_text())
        for raw, row in zip(table["rows"], table["formatted"], strict=True):
            assert [c.strip() for c in row] in md_rows, (name, row)
            for value, text in zip(raw, row, strict=True):  # the text is the number, rounded
                if isinstance(value, float):
                    assert float(text) == pytest.approx(value, abs=0.005 + 1e-9)


def test_numbers_are_consistent(run):
    _, _, first, _ = run
    for r in first["as_reported"].values():
        assert 0 <= r["fgsm"] <= 100 and 0 <= r["clean"] <= 100
        assert r["out_of_box"] > 0  # the student's FGSM leaves [0, 1]: that is the flaw
    for label, s in first["sound"].items():
        assert 0 <= s["worst_mean"] <= s["clean_mean"] + 1e-9 or s["randomized"], label
        assert set(s["attacks"]) >= {"FGSM", "PGD", "Square", "random noise"}
    assert set(first["sound"]["vone-mnist-cnn"]["attacks"]) >= {"PGD, noise fixed", "transfer"}


def test_second_run_recomputes_nothing(run):
    _, _, first, second = run
    assert first["result_computations"] > 0 and first["tensor_computations"] > 0
    assert second["result_computations"] == 0 and second["tensor_computations"] == 0
    assert second["sound"] == first["sound"] and second["as_reported"] == first["as_reported"]
