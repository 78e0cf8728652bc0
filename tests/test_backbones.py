"""A new backbone is one file and one registration: every method that supports its layout trains on it through
build_model, and a method asked on a layout it does not support is rejected in one line, before anything runs."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lai_bench.config import ConfigError, RunConfig
from lai_bench.models import (
    Backbone,
    backbone_info,
    build_model,
    list_backbones,
    list_models,
    method_info,
    register_backbone,
)
from lai_bench.models.backbones.registry import BACKBONES
from lai_bench.models.interaction.base import StageSpec
from lai_bench.models.interaction.stage import Stage
from lai_bench.models.layers.layout import FEATURE_MAPS, TOKENS
from lai_bench.validate import validate


class ConvBlock(nn.Module):
    """A plain conv block: branch BN(conv3x3(x_in)), identity x (a 1x1 projection where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, extra_in: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin + extra_in, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.project = None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x_in, x):
        return self.bn(self.conv(x_in)), x if self.project is None else self.project(x)


class MLPBlock(nn.Module):
    """A pre-norm token block: branch MLP(LN(x)), identity x."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x_in, x):
        return self.mlp(self.norm(x_in)), x


class ToyNet(nn.Module):
    """Stem, stages of blocks sharing one interaction each (the suite's Stage), the method's head, a classifier."""

    def __init__(self, stem: nn.Module, stages: list[Stage], head_in: int, num_classes: int, pool) -> None:
        super().__init__()
        self.stem, self.stages, self.pool = stem, nn.ModuleList(stages), pool
        self.fc = nn.Linear(head_in, num_classes)

    def forward(self, x):
        x, carry = self.stem(x), None
        for stage in self.stages:
            x, carry = stage(x, carry)
        return self.fc(self.pool(self.stages[-1].interaction.head(x, carry)))


class ToyMaps(Backbone):
    """Two stages of two plain conv blocks (widths 8, 16) on 16x16 images."""

    input_size = 16
    depth_help = "4"

    def check_depth(self, depth, block=None):
        if depth != 4:
            raise ValueError(f"toy_maps has depth 4 (two stages of two blocks), got {depth}")

    def stage_channels(self, depth, block=None):
        return [8, 16]

    def build(self, depth, num_classes, block, interaction, *, zero_init_residual=False):
        stages, cin = [], 8
        for i, width in enumerate((8, 16)):
            inter = interaction(StageSpec(width, 2, i, 2, FEATURE_MAPS))
            blocks = [ConvBlock(cin if t == 0 else width, width, 2 if (t == 0 and i) else 1,
                                inter.extra_input_channels) for t in range(2)]
            stages.append(Stage(blocks, inter))
            cin = width
        head = stages[-1].interaction.head_channels(16)
        return ToyNet(nn.Conv2d(3, 8, 3, padding=1), stages, head, num_classes, lambda x: x.mean((2, 3)))


class PatchStem(nn.Module):
    """4x4 patches of a 16x16 image as 16 tokens of width 16, a learned class token first."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 16, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, 16))

    def forward(self, x):
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)


class ToyTokens(Backbone):
    """One stage of three pre-norm MLP blocks on 16 patch tokens + a class token; the head reads the class token."""

    layout = TOKENS
    input_size = 16
    depth_help = "3"

    def check_depth(self, depth, block=None):
        if depth != 3:
            raise ValueError(f"toy_tokens has depth 3, got {depth}")

    def stage_channels(self, depth, block=None):
        return [16]

    def build(self, depth, num_classes, block, interaction, *, zero_init_residual=False):
        inter = interaction(StageSpec(16, 3, 0, 1, TOKENS))
        stage = Stage([MLPBlock(16) for _ in range(3)], inter)
        return ToyNet(PatchStem(), [stage], 16, num_classes, lambda x: x[:, 0])


@pytest.fixture(scope="module")
def toys():
    for name, cls in (("toy_maps", ToyMaps), ("toy_tokens", ToyTokens)):
        register_backbone(name)(cls)
    yield
    for name in ("toy_maps", "toy_tokens"):
        BACKBONES.unregister(name)


def train_step(model: nn.Module) -> float:
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 3, (4,))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model.train()(x), y)
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    return loss.item()


@pytest.mark.parametrize("method", list_models())
def test_every_method_that_supports_feature_maps_trains_a_step_on_a_new_backbone(toys, method):
    assert {"toy_maps", "toy_tokens"} <= set(list_backbones())
    model = build_model(method, "toy_maps", 4, 3)
    assert torch.isfinite(torch.tensor(train_step(model)))


ON_TOKENS = [m for m in list_models() if "tokens" in method_info(m).cls.layouts]


@pytest.mark.parametrize("method", ON_TOKENS)
def test_every_method_written_over_the_contract_trains_a_step_on_tokens(toys, method):
    model = build_model(method, "toy_tokens", 3, 3)
    assert torch.isfinite(torch.tensor(train_step(model)))
    norms = [m for m in model.stages[0].interaction.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms == []  # the layout's LayerNorm, never a map's BatchNorm


def test_a_method_on_a_layout_it_does_not_support_is_rejected_in_one_line(toys):
    with pytest.raises(ValueError) as built:
        build_model("rla", "toy_tokens", 3, 3)
    message = str(built.value)
    assert "\n" not in message and "'rla'" in message and "'toy_tokens'" in message
    assert "methods that do: " + ", ".join(ON_TOKENS) in message
    assert {"rla", "se", "eca", "dianet"}.isdisjoint(ON_TOKENS) and {"none", "mrla_light", "dla_b"} <= set(ON_TOKENS)
    with pytest.raises(ConfigError, match=r"method 'rla' does not work on backbone 'toy_tokens'"):
        validate(RunConfig(method="rla", backbone="toy_tokens", depth=3))


def test_the_toy_backbone_owns_its_depth_rule(toys):
    with pytest.raises(ValueError, match="toy_maps has depth 4"):
        build_model("none", "toy_maps", 6, 3)
    with pytest.raises(ConfigError, match="toy_maps has depth 4"):
        validate(RunConfig(method="se", backbone="toy_maps", depth=5))
    assert backbone_info("toy_maps").stage_channels(4) == [8, 16]


def test_the_resnet_backbones_declare_their_facts():
    cifar, imagenet = backbone_info("cifar"), backbone_info("imagenet")
    assert (cifar.input_size, cifar.default_recipe, cifar.layout) == (32, "cifar", FEATURE_MAPS)
    assert (imagenet.input_size, imagenet.default_recipe, imagenet.detection) == (224, "imagenet", True)
    assert imagenet.mean == (0.485, 0.456, 0.406) and imagenet.std == (0.229, 0.224, 0.225)
    assert cifar.stage_channels(164) == [64, 128, 256] and imagenet.stage_channels(50) == [256, 512, 1024, 2048]
    with pytest.raises(ValueError, match=r"unknown backbone 'vit'; allowed: (.*, )?cifar, deit_base"):
        backbone_info("vit")
