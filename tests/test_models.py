"""Tests of the model registry and the four MNIST models of the student report."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from advlab.models import (
    ModelInfo,
    create,
    is_randomized,
    list_models,
    model_info,
    register,
    unregister,
)

PLAIN = ["mnist-alexnet", "mnist-convnet", "mnist-cnn", "mnist-mlp"]
VONE = ["vone-" + name for name in PLAIN]


def conv(cin: int, cout: int, k: int) -> int:
    return cout * cin * k * k + cout


def linear(fin: int, fout: int) -> int:
    return fin * fout + fout


def expected_params(name: str, cin: int = 1, classes: int = 10) -> int:
    """Parameter counts written out layer by layer from REFERENCE section 1b."""
    if name == "mnist-alexnet":
        features = conv(cin, 192, 5) + conv(192, 384, 3) + conv(384, 256, 3) + conv(256, 256, 3)
        return features + linear(256 * 7 * 7, 4096) + linear(4096, 4096) + linear(4096, classes)
    if name == "mnist-convnet":
        features = conv(cin, 32, 3) + conv(32, 64, 3) + conv(64, 128, 3)
        # 28 -MaxPool(3,3)-> 9 -MaxPool(3,3)-> 3 -conv stride 2, pad 1-> 2: 128 * 2 * 2 = 512
        return features + linear(128 * 2 * 2, 512) + linear(512, 512) + linear(512, classes)
    if name == "mnist-cnn":
        return conv(cin, 32, 3) + conv(32, 64, 3) + linear(64 * 7 * 7, classes)
    if name == "mnist-mlp":
        return linear(cin * 28 * 28, 784) + linear(784, classes)
    raise AssertionError(name)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def plain_models():
    torch.manual_seed(0)
    return {name: create(name).eval() for name in PLAIN}


def on_meta(name: str, **kwargs) -> nn.Module:
    """Build without allocating weights (parameter counts of the 70M-param AlexNet)."""
    with torch.device("meta"):
        return create(name, **kwargs).eval()


def test_registry_lists_the_zoo():
    names = list_models()
    assert names == sorted(names)
    for name in PLAIN + VONE:
        assert name in names


@pytest.mark.parametrize("name", PLAIN)
def test_output_shape_and_exact_parameter_count(plain_models, name):
    model = plain_models[name]
    out = model(torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 10) and out.dtype == torch.float32
    assert n_params(model) == expected_params(name)


def test_hand_counts_match_known_totals():
    # cross-check of the formula itself against independently computed totals
    assert expected_params("mnist-cnn") == 50_186
    assert expected_params("mnist-mlp") == 623_290
    assert expected_params("mnist-convnet") == 623_114
    assert expected_params("mnist-alexnet") == 70_350_602


@pytest.mark.parametrize("name", PLAIN)
def test_in_channels_and_num_classes(name):
    assert n_params(on_meta(name, in_channels=32, num_classes=7)) == expected_params(
        name, cin=32, classes=7
    )
    assert model_info(name, in_channels=32, num_classes=7).input_shape == (32, 28, 28)
    if name != "mnist-alexnet":  # its 32-channel forward runs in test_vone.py
        model = create(name, in_channels=32, num_classes=7).eval()
        assert model(torch.rand(2, 32, 28, 28)).shape == (2, 7)


@pytest.mark.parametrize("name", PLAIN)
def test_input_gradient_is_finite_and_nonzero(plain_models, name):
    model = plain_models[name]
    x = torch.rand(1, 1, 28, 28, requires_grad=True)
    model(x).logsumexp(dim=1).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_deterministic_in_eval_mode(plain_models):
    x = torch.rand(1, 1, 28, 28)
    for model in plain_models.values():
        assert torch.equal(model(x), model(x))
        assert not is_randomized(model)


# --------------------------------------------------------------------------- registry


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as info:
        create("mnist-cnnn")
    msg = str(info.value)
    assert "'mnist-cnnn'" in msg and "did you mean 'mnist-cnn'" in msg
    for name in PLAIN + VONE:
        assert name in msg
    with pytest.raises(ValueError, match="known models"):
        model_info("resnet-9000")


def test_bad_kwarg_names_the_kwarg():
    with pytest.raises(TypeError, match="'in_chanels'") as info:
        create("mnist-cnn", in_chanels=3)
    assert "in_channels" in str(info.value)  # lists what it accepts
    with pytest.raises(TypeError, match="'bogus'"):
        model_info("mnist-mlp", bogus=1)
    with pytest.raises(TypeError, match="'kernel'"):
        create("vone-mnist-cnn", kernel=5)


def test_bad_values_name_value_and_expectation():
    with pytest.raises(ValueError, match="in_channels must be an integer >= 1, got 0"):
        create("mnist-cnn", in_channels=0)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got -1"):
        create("mnist-mlp", num_classes=-1)


def test_model_info_is_typed_and_frozen():
    info = model_info("mnist-cnn")
    assert isinstance(info, ModelInfo)
    assert info == ModelInfo(
        name="mnist-cnn",
        input_shape=(1, 28, 28),
        num_classes=10,
        description=info.description,
        randomized=False,
        reference=info.reference,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.num_classes = 3  # type: ignore[misc]
    assert model_info("mnist-cnn", num_classes=4).num_classes == 4
    assert model_info("vone-mnist-cnn").randomized is True
    assert model_info("vone-mnist-cnn", noise_mode="none").randomized is False
    assert model_info("vone-mnist-mlp", preset="report").randomized is True


def test_create_records_how_to_rebuild():
    model = create("mnist-cnn", num_classes=5)
    assert model.registry_name == "mnist-cnn"
    assert model.registry_kwargs == {"num_classes": 5}


def test_register_decorator_and_its_errors():
    @register("test-tiny", input_shape=(1, 28, 28), num_classes=2, description="tiny")
    def tiny(*, width: int = 3) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.Linear(width, 2))

    try:
        assert "test-tiny" in list_models()
        assert create("test-tiny", width=5)(torch.rand(1, 1, 28, 28)).shape == (1, 2)
        assert model_info("test-tiny").randomized is False
        with pytest.raises(ValueError, match="already registered"):
            register("test-tiny", input_shape=(1,), num_classes=1, description="x")(tiny)
    finally:
        unregister("test-tiny")
    assert "test-tiny" not in list_models()
    with pytest.raises(TypeError, match="unknown metadata field"):
        register("test-x", input_shape=(1,), num_classes=1, description="x", colour="red")
    with pytest.raises(TypeError, match="missing metadata field"):
        register("test-x", input_shape=(1,))
    with pytest.raises(ValueError, match="non-empty string"):
        register("", input_shape=(1,), num_classes=1, description="x")


def test_factory_must_return_a_module():
    @register("test-not-a-module", input_shape=(1,), num_classes=1, description="broken")
    def broken():
        return 42

    try:
        with pytest.raises(TypeError, match="expected torch.nn.Module"):
            create("test-not-a-module")
    finally:
        unregister("test-not-a-module")
