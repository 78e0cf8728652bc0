"""The method and backbone registries: a mistyped name is one line that says what was meant, a name is taken once, a
method registered anywhere builds, and the models package imports in one direction (no circle; methods apart)."""
import itertools

import grimp
import pytest
import torch
from import_graph import import_circles

from lai_bench.models import (
    backbone_info,
    build_model,
    display_name,
    list_models,
    method_info,
    method_options,
    register_backbone,
    register_method,
)
from lai_bench.models.backbones.registry import Backbone
from lai_bench.models.interaction.base import GatedInteraction
from lai_bench.models.interaction.registry import METHODS
from lai_bench.models.interaction.se import SE


@pytest.mark.parametrize("lookup,kind,name,meant,allowed", [
    (method_info, "method", "mrla_lite", "mrla_light", "dense, dhc, dianet, dla_b, dla_l, "),
    (backbone_info, "backbone", "cifar10", "cifar",
     "cifar, deit_base, deit_small, deit_tiny, gpt2_small, gpt_nano, imagenet, "),
])
def test_a_mistyped_name_is_one_line_with_the_nearest_name_and_every_allowed_one(lookup, kind, name, meant, allowed):
    with pytest.raises(ValueError) as raised:
        lookup(name)
    message = str(raised.value)
    assert message.startswith(f"unknown {kind} {name!r} (did you mean {meant!r}?); allowed: {allowed}")
    assert "\n" not in message


def test_build_model_reports_a_mistyped_method_before_building_anything():
    with pytest.raises(ValueError, match=r"^unknown method 'dla_c' \(did you mean 'dla_l'\?\); allowed: dense, "):
        build_model("dla_c", "cifar", 20, 10)


def test_a_name_is_registered_once_and_the_first_entry_stays():
    with pytest.raises(ValueError, match="method 'se' is registered twice"):
        register_method("se", display="SE again")(SE)
    with pytest.raises(ValueError, match="backbone 'cifar' is registered twice"):
        register_backbone("cifar")(type("Again", (Backbone,), {}))
    assert method_info("se").cls is SE and display_name("se") == "SE"
    assert backbone_info("cifar").name == "cifar" and type(backbone_info("cifar")).__name__ != "Again"


class ScalarGate(GatedInteraction):
    """A learned scalar per block gates its residual branch: x_t = act(r_t * sigmoid(w_t) + s_t)."""

    def __init__(self, spec, *, init: float = 0.0, **kw) -> None:
        super().__init__(spec, **kw)
        self.w = torch.nn.Parameter(torch.full((spec.num_blocks,), init))

    def gate(self, t, residual, state):
        return torch.sigmoid(self.w[t]).expand(residual.shape[0], self.spec.channels), state


@pytest.fixture
def scalar_gate():
    register_method("scalar_gate", display="Scalar gate", order=50, init=2.0)(ScalarGate)
    yield
    METHODS.unregister("scalar_gate")


def test_a_method_registered_outside_the_package_is_listed_and_builds(scalar_gate):
    assert "scalar_gate" in list_models() and display_name("scalar_gate") == "Scalar gate"
    assert method_options("scalar_gate", "cifar") == {"drop_path": 0.0, "init": 2.0}  # the registered default wins
    model, plain = build_model("scalar_gate", "cifar", 20, 10), build_model("none", "cifar", 20, 10)
    gates = [m.interaction.w for m in model.stages]
    assert [g.tolist() for g in gates] == [[2.0] * 3] * 3  # ResNet-20: 3 stages of 3 blocks
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters()) + 9
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("lai_bench")  # function-level imports included


def test_the_models_package_has_no_import_circle(graph):
    models = {m for m in graph.modules if m == "lai_bench.models" or m.startswith("lai_bench.models.")}
    edges = {m: graph.find_modules_directly_imported_by(m) & models for m in models}
    assert len(models) > 30 and edges["lai_bench.models"] >= {"lai_bench.models.backbones",
                                                               "lai_bench.models.interaction"}
    assert import_circles(edges) == []
    assert import_circles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]  # the check can see one


def test_the_registries_import_none_of_their_members_and_no_method_imports_another(graph):
    members = {*graph.find_children("lai_bench.models.interaction"), *graph.find_children("lai_bench.models.backbones")}
    for registry in ("lai_bench.models.interaction.registry", "lai_bench.models.backbones.registry"):
        assert graph.find_upstream_modules(registry) & members == set()
    methods = sorted(m for m in graph.find_children("lai_bench.models.interaction")
                     if m.rsplit(".", 1)[1] not in {"base", "registry", "stage"})
    assert len(methods) >= 11 and "lai_bench.models.interaction.dla" in methods
    assert [(a, b) for a, b in itertools.permutations(methods, 2) if graph.chain_exists(a, b)] == []
