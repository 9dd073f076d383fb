"""Tests of the MNIST stand-ins for the momentum paper's four normal models (paper_zoo)."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn

from advlab.models import (
    MNISTInceptionResNetV2,
    MNISTInceptionV3,
    MNISTInceptionV4,
    MNISTResNet,
    create,
    model_info,
)
from advlab.models.paper_zoo import AvgPool3, pool_branch

# registry name -> (class, exact parameter count for 1 input channel and 10 classes)
ZOO = {
    "mnist-inception-v3": (MNISTInceptionV3, 41_182),
    "mnist-inception-v4": (MNISTInceptionV4, 48_679),
    "mnist-inception-resnet-v2": (MNISTInceptionResNetV2, 44_898),
    "mnist-resnet": (MNISTResNet, 60_522),
}
NAMES = list(ZOO)
ROLES = {
    "mnist-inception-v3": ("Inception-v3", "Rethinking the Inception Architecture"),
    "mnist-inception-v4": ("Inception-v4", "Inception-v4, Inception-ResNet"),
    "mnist-inception-resnet-v2": ("Inception-ResNet-v2", "Inception-v4, Inception-ResNet"),
    "mnist-resnet": ("ResNet-152", "Deep Residual Learning"),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def n_convs(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, AvgPool3) or super().is_leaf_module(m, qualname)


def depth(model: nn.Module) -> int:
    """Weight layers (Conv2d, Linear) on the longest input-to-logits path of the graph."""
    graph = _Tracer().trace(model)
    modules = dict(model.named_modules())
    d: dict[torch.fx.Node, int] = {}
    for node in graph.nodes:
        weight = node.op == "call_module" and isinstance(modules[node.target],
                                                         (nn.Conv2d, nn.Linear))
        d[node] = max((d[a] for a in node.all_input_nodes), default=0) + int(weight)
    return max(d.values())


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: create(name).eval() for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_exact_parameter_count(models, name):
    cls, expected = ZOO[name]
    assert isinstance(models[name], cls)
    assert n_params(models[name]) == expected
    assert model_info(name).params == expected


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes_and_constructor_arguments(models, name):
    for n in (1, 5):
        out = models[name](torch.rand(n, 1, 28, 28))
        assert out.shape == (n, 10) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
    cls, _ = ZOO[name]
    assert cls(num_classes=7).eval()(torch.rand(2, 1, 28, 28)).shape == (2, 7)
    rgb = create(name, in_channels=3).eval()
    assert rgb(torch.rand(2, 3, 28, 28)).shape == (2, 10)
    assert model_info(name, in_channels=3).input_shape == (3, 28, 28)
    assert model_info(name, in_channels=3).params > model_info(name).params


@pytest.mark.parametrize("name", NAMES)
def test_input_gradient_is_finite_and_nonzero(models, name):
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    models[name](x).logsumexp(dim=1).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    models[name].zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_is_deterministic_and_batch_independent(models, name):
    model = models[name]
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        batch = model(x)
        assert torch.equal(batch, model(x))
        for i in range(x.shape[0]):
            torch.testing.assert_close(model(x[i:i + 1])[0], batch[i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_forward_flops_are_measured_and_cheap(name):
    flops = model_info(name).forward_flops
    assert flops is not None and 2e6 <= flops <= 10e6  # the zoo's CPU budget per example


def test_depth_ordering_follows_the_paper_models():
    built = {name: create(name) for name in NAMES}
    conv = {name: n_convs(m) for name, m in built.items()}
    deep = {name: depth(m) for name, m in built.items()}
    assert deep == {"mnist-inception-v3": 16, "mnist-inception-v4": 24,
                    "mnist-inception-resnet-v2": 29, "mnist-resnet": 32}
    # ResNet-152 the deepest, Inception-v4 deeper and with more layers than Inception-v3
    assert deep["mnist-resnet"] == max(deep.values()) and deep["mnist-resnet"] >= 29
    assert deep["mnist-inception-v4"] > deep["mnist-inception-v3"]
    assert conv["mnist-inception-v4"] > conv["mnist-inception-v3"]
    assert deep["mnist-inception-resnet-v2"] > deep["mnist-inception-v3"]


def test_only_the_residual_nets_have_skip_connections():
    names = {name: {type(m).__name__ for m in create(name).modules()} for name in NAMES}
    assert "InceptionResidual" in names["mnist-inception-resnet-v2"]
    assert "Bottleneck" in names["mnist-resnet"]
    for name in ("mnist-inception-v3", "mnist-inception-v4"):
        assert not names[name] & {"InceptionResidual", "Bottleneck"}


def test_pool_branch_equals_average_pool_then_projection():
    torch.manual_seed(0)
    branch = pool_branch(5, 3).eval()
    conv, bn_relu = branch[0], branch[2:]
    x = torch.rand(2, 5, 7, 7)
    expected = bn_relu(conv(nn.AvgPool2d(3, stride=1, padding=1)(x)))
    torch.testing.assert_close(branch(x), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_registry_metadata_names_the_paper_role(name):
    role, paper = ROLES[name]
    info = model_info(name)
    assert role in info.description and "momentum zoo" in info.description
    assert f"{info.params / 1e6:.3f}M params" in info.description  # the typed figure is right
    assert paper in info.reference and "Dong et al." in info.reference
    assert info.num_classes == 10 and info.randomized is False


@pytest.mark.parametrize("cls", [c for c, _ in ZOO.values()])
def test_bad_constructor_arguments_name_the_value(cls):
    with pytest.raises(ValueError, match="in_channels must be an integer >= 1, got 0"):
        cls(in_channels=0)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got -1"):
        cls(num_classes=-1)
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1, got 2\.5"):
        cls(num_classes=2.5)


# ------------------------------------------------ the measured fields of the registry


def test_measured_fields_cannot_be_registered_by_hand():
    from advlab.models import register

    with pytest.raises(TypeError, match="unknown metadata field.*params"):
        register("test-typed-cost", input_shape=(1, 28, 28), num_classes=10,
                 description="x", params=5)


def test_model_info_measures_without_side_effects_or_errors():
    from advlab.models import register, unregister

    @register("test-cpu-only", input_shape=(1, 4, 4), num_classes=2, description="x")
    def cpu_only() -> nn.Module:
        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc = nn.Linear(16, 2)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                if float(x.sum()) > 1e9:  # .item() is impossible on the meta device
                    raise AssertionError
                return self.fc(x.flatten(1))

        return Net()

    @register("test-broken", input_shape=(1, 4, 4), num_classes=2, description="x")
    def broken() -> nn.Module:
        raise RuntimeError("cannot be built here")

    try:
        torch.manual_seed(0)
        expected = torch.rand(3)
        torch.manual_seed(0)
        info = model_info("test-cpu-only")
        assert torch.equal(torch.rand(3), expected)  # measuring does not move the global RNG
        assert (info.params, info.forward_flops) == (34, 2 * 16 * 2)  # the CPU fallback
        assert model_info("test-broken").params is None
        assert model_info("test-broken").forward_flops is None
    finally:
        unregister("test-cpu-only")
        unregister("test-broken")
