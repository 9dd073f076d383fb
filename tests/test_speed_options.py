"""The speed options of the attack loop (amp, channels_last, compile) keep the threat model.

Each option must give adversarial examples inside the eps-ball and the pixel box, leave the
caller's model and inputs untouched, and stay close to the full-precision attack. The
compile tests use the cheap ``aot_eager`` backend (dynamo + AOTAutograd, no code
generation); the inductor backend itself is behind the ``slow`` marker.
"""

from __future__ import annotations

import copy
import gc
import logging
import weakref

import pytest
import torch

import advlab.attacks.oracle as oracle_mod
from advlab.attacks import FGSM, MIFGSM, PGD, Ensemble, create_attack
from advlab.threat import Norm, per_example_norm
from conftest import TinyCNN, blobs

OPTIONS = {
    "bf16": dict(amp="bf16"),
    "fp16": dict(amp="fp16"),
    "channels_last": dict(channels_last=True),
    "compile": dict(compile=True),
    "all": dict(amp="bf16", channels_last=True, compile=True),
}
EPS = {Norm.LINF: 0.1, Norm.L2: 0.8}


@pytest.fixture(autouse=True)
def cheap_compile(monkeypatch):
    monkeypatch.setattr(oracle_mod, "_COMPILE_BACKEND", "aot_eager")


def state_of(model):
    return {k: (v.clone(), v.data_ptr(), v.stride()) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("norm", list(EPS), ids=lambda n: n.value)
@pytest.mark.parametrize("name", ["fgsm", "pgd", "mifgsm"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_valid_adversarial_examples_and_no_side_effects(option, name, norm, trained_cnn):
    x, y = blobs(24, seed=8)
    model = copy.deepcopy(trained_cnn)
    model.train()
    modes = [m.training for m in model.modules()]
    before = state_of(model)
    x0 = x.clone()
    atk = create_attack(name, eps=EPS[norm], norm=norm, steps=1 if name == "fgsm" else 4,
                        **OPTIONS[option])
    x_adv = atk(model, x, y)

    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert x_adv.is_contiguous()
    assert per_example_norm(x_adv - x, norm).max() <= EPS[norm] + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.isfinite(x_adv).all() and (x_adv != x).any()
    assert torch.equal(x, x0)
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    for k, (v, ptr, stride) in before.items():  # the caller's very tensors, values and layout
        now = model.state_dict()[k]
        assert torch.equal(now, v) and now.data_ptr() == ptr and now.stride() == stride, k


@pytest.mark.parametrize("option", ["channels_last", "compile"])
def test_exact_options_match_the_default_attack(option, trained_cnn):
    """channels_last and compile change the arithmetic order only: the same steps."""
    x, y = blobs(64, seed=9)
    ref = MIFGSM(eps=0.1, steps=5)(trained_cnn, x, y)
    out = MIFGSM(eps=0.1, steps=5, **OPTIONS[option])(trained_cnn, x, y)
    assert (out != ref).float().mean() < 0.01  # a rare sign flip of a rounding-level gradient
    ok = (out == ref).all(dim=(1, 2, 3)).float().mean()
    assert ok > 0.9


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_success_rate_close_to_full_precision(amp, trained_cnn):
    x, y = blobs(300, seed=10)
    with torch.no_grad():
        def success(xa):
            return float((trained_cnn(xa).argmax(1) != y).float().mean())

        for atk in (FGSM(eps=0.15), MIFGSM(eps=0.15, steps=5)):
            full = success(atk(trained_cnn, x, y))
            low = success(atk.replace(amp=amp)(trained_cnn, x, y))
            assert abs(full - low) <= 0.05, (atk.name, full, low)


def test_amp_gradient_sign_mostly_agrees(trained_cnn):
    x, y = blobs(64, seed=13)
    g32, _ = MIFGSM(eps=0.1)._gradient(trained_cnn, x, y)
    for amp in ("bf16", "fp16"):
        g, loss = MIFGSM(eps=0.1, amp=amp)._gradient(trained_cnn, x, y)
        assert g.dtype == x.dtype and loss.dtype == x.dtype
        big = g32.abs() > 1e-3 * g32.abs().amax()
        assert (g.sign() == g32.sign())[big].float().mean() > 0.9


class Overflowing(torch.nn.Module):
    """Logits beyond fp16's range (65504): the fp16 forward overflows to inf."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.lin(x.flatten(1)) * 1e6


def test_fp16_overflow_retries_in_full_precision(caplog):
    x, y = blobs(8, seed=14)
    model = Overflowing().eval()
    with caplog.at_level(logging.WARNING, logger="advlab.attacks.oracle"):
        out = MIFGSM(eps=0.1, steps=3, amp="fp16")(model, x, y)
    ref = MIFGSM(eps=0.1, steps=3)(model, x, y)
    assert "overflowed" in caplog.text
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=0, rtol=0)


def test_options_through_the_ensemble_hooks(trained_cnn):
    x, y = blobs(16, seed=15)
    torch.manual_seed(1)
    members = [trained_cnn, TinyCNN().eval()]
    for low in (False, True):
        ens = Ensemble(members, fuse="loss", low_memory=low)
        ref = MIFGSM(eps=0.1, steps=3)(ens, x, y)
        for option in ("bf16", "channels_last", "compile"):
            out = MIFGSM(eps=0.1, steps=3, **OPTIONS[option])(ens, x, y)
            assert (out - x).abs().max() <= 0.1 + 1e-6 and 0 <= out.min() and out.max() <= 1
            if option != "bf16":
                assert (out != ref).float().mean() < 0.01


def test_pgd_restarts_with_options(trained_cnn):
    x, y = blobs(16, seed=16)
    out = PGD(eps=0.1, steps=3, restarts=2, amp="bf16", channels_last=True)(trained_cnn, x, y)
    assert (out - x).abs().max() <= 0.1 + 1e-6 and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(amp="fp8"), ValueError, r"amp must be None, 'bf16' or 'fp16', got 'fp8'"),
    (dict(amp=True), ValueError, "amp must be None"),
    (dict(channels_last=1), TypeError, "channels_last must be a bool, got 1"),
    (dict(compile="yes"), TypeError, "compile must be a bool, got 'yes'"),
])
def test_bad_option_values(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        MIFGSM(eps=0.1, **kwargs)


def test_compile_failure_is_a_clear_error(monkeypatch, trained_cnn):
    x, y = blobs(4, seed=17)

    def broken(*args, **kwargs):
        raise RuntimeError("dynamo is not supported here")

    monkeypatch.setattr(torch, "compile", broken)
    model = copy.deepcopy(trained_cnn)
    with pytest.raises(RuntimeError, match=r"compile=True: torch.compile failed for TinyCNN "
                                           r"\(RuntimeError: dynamo is not supported here\); "
                                           r"run the attack with compile=False"):
        FGSM(eps=0.1, compile=True)(model, x, y)


def test_compile_error_at_first_call_is_wrapped(monkeypatch, trained_cnn):
    from torch._dynamo.exc import TorchDynamoException

    def compile_then_fail(fn, **kwargs):
        def run(*args):
            raise TorchDynamoException("backend exploded")
        return run

    monkeypatch.setattr(torch, "compile", compile_then_fail)
    x, y = blobs(4, seed=17)
    model = copy.deepcopy(trained_cnn)
    model.train()
    with pytest.raises(RuntimeError, match="torch.compile failed for TinyCNN.*backend exploded"):
        MIFGSM(eps=0.1, compile=True, channels_last=True)(model, x, y)
    assert model.training  # modes and parameters restored on the error path too
    assert all(p.is_contiguous() for p in model.parameters())


def test_compile_cache_is_per_model_and_weak():
    x, y = blobs(4, seed=18)
    torch.manual_seed(0)
    model = TinyCNN().eval()
    FGSM(eps=0.1, compile=True)(model, x, y)
    fn = oracle_mod._COMPILED[model]["aot_eager"]
    MIFGSM(eps=0.1, steps=2, compile=True)(model, x, y)
    assert oracle_mod._COMPILED[model]["aot_eager"] is fn  # cached per model object
    with torch.no_grad():  # an in-place weight update is seen by the compiled forward
        model.head[-1].bias.add_(100.0 * torch.arange(10.0))
    g_c, _ = MIFGSM(eps=0.1, compile=True)._gradient(model, x, y)
    g_e, _ = MIFGSM(eps=0.1)._gradient(model, x, y)
    torch.testing.assert_close(g_c, g_e, atol=1e-6, rtol=1e-4)
    ref = weakref.ref(model)
    del model, fn
    gc.collect()
    assert ref() is None  # the cache does not keep the model alive
    oracle_mod.clear_compile_cache()
    assert len(oracle_mod._COMPILED) == 0


@pytest.mark.slow
def test_inductor_compile(monkeypatch, trained_cnn):
    monkeypatch.setattr(oracle_mod, "_COMPILE_BACKEND", "inductor")
    x, y = blobs(32, seed=19)
    ref = MIFGSM(eps=0.1, steps=3)(trained_cnn, x, y)
    out = MIFGSM(eps=0.1, steps=3, compile=True)(trained_cnn, x, y)
    assert (out - x).abs().max() <= 0.1 + 1e-6
    assert (out != ref).float().mean() < 0.01
