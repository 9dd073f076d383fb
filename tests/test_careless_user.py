"""What a careless user types gets one clear error line and a non-zero exit, before any work."""

from __future__ import annotations

import pytest
import torch

from advlab.cli import main


def run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda_is_one_line(tmp_path, capsys):
    code, err = run(["train", "mnist-cnn", "--quick", "--device", "cuda",
                     "--out", str(tmp_path / "m")], capsys)
    assert code == 2
    assert err == "error: --device 'cuda': CUDA is not available on this machine"
    assert not (tmp_path / "m").exists()


def test_explicit_data_root_without_mnist_fails(tmp_path, capsys):
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    code, err = run(["train", "mnist-cnn", "--quick", "--data-root", str(empty),
                     "--out", str(tmp_path / "m")], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: --data-root {str(empty)!r} holds no MNIST")
    assert "t10k-images-idx3-ubyte" in err
    assert not (tmp_path / "m").exists()


def test_data_env_var_without_mnist_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path))
    code, err = run(["attack", "mnist-mlp", "--n", "4", "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"$ADVLAB_DATA={str(tmp_path)!r} holds no MNIST" in err


@pytest.mark.parametrize("argv", [
    ["train", "mnist-cnn", "--quick"],
    ["attack", "mnist-mlp", "--n", "4"],
    ["evaluate", "mnist-mlp", "--n", "4"],
    ["reproduce", "vonenet-fgsm", "--quick"],
    ["reproduce", "momentum", "--quick"],
])
def test_out_naming_a_file_says_it_must_be_a_directory(tmp_path, capsys, argv):
    f = tmp_path / "results.txt"
    f.write_text("keep me")
    code, err = run([*argv, "--out", str(f)], capsys)
    assert code == 2
    assert err == f"error: --out {str(f)!r} is an existing file: --out must be a directory"
    assert f.read_text() == "keep me"


def test_progress_bars_only_on_a_terminal(monkeypatch):
    import argparse
    import io

    from advlab.cli.options import add_progress_options, show_progress

    p = argparse.ArgumentParser()
    add_progress_options(p)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert show_progress(p.parse_args([])) is False        # redirected: no bar redraws
    assert show_progress(p.parse_args(["--progress"])) is True
    monkeypatch.setattr("sys.stderr", Tty())
    assert show_progress(p.parse_args([])) is True
    assert show_progress(p.parse_args(["--no-progress"])) is False
    with pytest.raises(SystemExit):
        p.parse_args(["--progress", "--no-progress"])
