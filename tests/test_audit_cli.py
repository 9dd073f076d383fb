"""`advlab audit` on a student-exact VOne checkpoint fails on its NaN gradients; the same
checkpoint loaded as its finite-gradient twin passes."""

from __future__ import annotations

import json

import pytest

from advlab import cli


@pytest.fixture(scope="module")
def student_checkpoint(tmp_path_factory):
    """A trained vone-mnist-cnn with the student's exact front end (the report bank's
    geometry and exact complex cell; 16 + 16 cells to keep the test cheap)."""
    out = tmp_path_factory.mktemp("audit-cli") / "vone-report"
    rc = cli.main(["train", "vone-mnist-cnn", "--model-arg", "preset=report",
                   "--model-arg", "simple_channels=16", "--model-arg", "complex_channels=16",
                   "--train-size", "3000", "--test-size", "200", "--epochs", "2",
                   "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


AUDIT = ["--eps", "0.35", "--n", "24", "--quick", "--eot", "2", "--no-progress"]


def test_audit_exits_1_on_nan_gradients_and_0_on_the_finite_twin(student_checkpoint, tmp_path,
                                                                  capsys):
    rc = cli.main(["audit", str(student_checkpoint), *AUDIT, "--json",
                   str(tmp_path / "exact.json")])
    text = capsys.readouterr().out
    assert rc == 1, text
    assert "[FAIL] gradients_finite_nonzero: " in text
    assert "% of input-gradient entries are NaN/inf" in text
    assert "verdict: the evaluation is NOT trustworthy" in text
    flags = {f["name"]: f for f in json.loads((tmp_path / "exact.json").read_text())["flags"]}
    assert flags["gradients_finite_nonzero"]["numbers"]["nonfinite_entry_fraction"] > 0

    rc = cli.main(["audit", str(student_checkpoint), *AUDIT, "--model-arg",
                   "complex_cell=safe", "--json", str(tmp_path / "twin.json")])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "[PASS] gradients_finite_nonzero" in text and "[PASS] budget_used" in text
    assert "verdict: the evaluation is trustworthy" in text


def test_model_arg_cannot_change_the_weights(student_checkpoint, capsys):
    """Overrides rebuild the model around the same state dict: a change of shape is refused."""
    with pytest.raises(RuntimeError, match="size mismatch|Missing key|Unexpected key"):
        cli.main(["audit", str(student_checkpoint), *AUDIT, "--model-arg",
                  "complex_channels=8"])
