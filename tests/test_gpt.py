"""A GPT is one backbone file on the causal layout: the plain model is GPT-2 (its parameter count, Hugging Face's
logits from the same weights), a position never sees a later one under any method that declares the layout, and a
method that does not declare it is refused before anything is built."""
import pytest
import torch

from lai_bench.models import (
    PretrainedError,
    backbone_info,
    build_model,
    list_backbones,
    list_models,
    load_pretrained,
    method_info,
    register_backbone,
)
from lai_bench.models.backbones.gpt import GPTBackbone
from lai_bench.models.backbones.registry import BACKBONES
from lai_bench.models.layers.layout import CAUSAL, FEATURE_MAPS, TOKENS

NANO, SMALL = "gpt_nano", "gpt2_small"
ON_CAUSAL = [m for m in list_models() if "causal" in method_info(m).cls.layouts]


class TinyGPT(GPTBackbone):
    """The size of the Hugging Face model the test writes: 4 blocks of width 64, 4 heads, context 32."""

    width, heads, context, default_depth = 64, 4, 32, 4


@pytest.fixture
def tiny_gpt():
    register_backbone("gpt_test_tiny")(TinyGPT)
    yield "gpt_test_tiny"
    BACKBONES.unregister("gpt_test_tiny")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # the tied head is the embedding: counted once


def test_gpt2_small_has_gpt2_smalls_124439808_parameters():
    with torch.device("meta"):
        model = build_model("none", SMALL, num_classes=50257)
    assert n_params(model) == 124_439_808
    assert model.lm_head.weight is model.wte.weight
    assert len(model.stages) == 3 and sum(len(s.blocks) for s in model.stages) == 12
    assert backbone_info(SMALL).model_name(12) == "GPT-2 small"


def test_the_gpt_backbones_declare_their_facts():
    nano, small = backbone_info(NANO), backbone_info(SMALL)
    assert {NANO, SMALL} <= set(list_backbones())
    assert (nano.layout, nano.default_depth, nano.input_size, nano.width) == (CAUSAL, 6, 256, 128)
    assert (small.layout, small.default_depth, small.input_size, small.width) == (CAUSAL, 12, 1024, 768)
    assert TinyGPT().input_size == 32  # the context, whatever size sets it
    assert nano.default_recipe is None and nano.mean == () and small.stage_channels(12) == [768] * 3


def test_an_unset_depth_is_the_backbones_default_and_tokens_give_logits_per_position():
    torch.manual_seed(0)
    model = build_model("none", NANO, num_classes=256)
    assert sum(len(s.blocks) for s in model.stages) == 6
    logits = model(torch.randint(0, 256, (2, 17)))
    assert logits.shape == (2, 17, 256) and torch.isfinite(logits).all()


def test_gpt2_init_scales_the_residual_projections_and_zeroes_the_biases():
    torch.manual_seed(0)
    model = build_model("none", NANO, num_classes=256)
    block = model.stages[0].blocks[0]
    assert abs(block.attn.c_attn.weight.std().item() - 0.02) < 2e-3
    assert abs(block.mlp.c_proj.weight.std().item() - 0.02 / 12 ** 0.5) < 1e-3  # 0.02 / sqrt(2 x 6 blocks)
    assert torch.equal(block.attn.c_attn.bias, torch.zeros(3 * 128)) and torch.equal(block.ln_1.weight, torch.ones(128))
    assert model.no_weight_decay() == set()  # nanoGPT's rule: the optimizer exempts 1-D tensors only


def test_a_sequence_longer_than_the_context_is_one_value_error():
    model = build_model("none", NANO, 2, 256)
    with pytest.raises(ValueError, match=r"^a sequence of 257 tokens is longer than the model's context of 256$"):
        model(torch.zeros(1, 257, dtype=torch.long))


def test_a_method_without_the_causal_layout_is_refused_in_one_line():
    assert "se" not in ON_CAUSAL and "none" in ON_CAUSAL
    with pytest.raises(ValueError) as refused:
        build_model("se", NANO, num_classes=256)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"method 'se' does not work on backbone '{NANO}' (causal layout")
    assert message.endswith("methods that do: " + ", ".join(ON_CAUSAL))


def test_only_the_plain_method_declares_the_causal_layout_for_now():
    assert ON_CAUSAL == ["none"]  # the others get their causal forms in a later change, each opting in itself


def test_the_causal_layout_keeps_every_position_apart():
    x = torch.randn(2, 5, 8)
    assert torch.equal(CAUSAL.descriptor(x), x)  # per position: no pooling over the sequence
    gate = torch.rand(2, 8)
    assert CAUSAL.per_channel(gate).shape == (2, 1, 8) and torch.equal(CAUSAL.per_channel(x), x)
    mixer = CAUSAL.value_mixer(8)
    y = torch.randn(2, 5, 8)
    later = y.clone()
    later[:, 3:] = torch.randn(2, 2, 8)
    assert torch.equal(mixer(y)[:, :3], mixer(later)[:, :3]) and not torch.equal(mixer(y), mixer(later))
    assert (FEATURE_MAPS.name, TOKENS.name, CAUSAL.name) == ("maps", "tokens", "causal")


@pytest.mark.parametrize("method", ON_CAUSAL)
def test_no_position_sees_a_later_one(method):
    torch.manual_seed(0)
    model = build_model(method, NANO, 5, 50).double().eval()
    tokens = torch.randint(0, 50, (2, 24))
    changed = tokens.clone()
    changed[:, 11:] = torch.randint(0, 50, (2, 13))
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    assert torch.equal(before[:, :11], after[:, :11])
    assert not torch.equal(before[:, 11:], after[:, 11:])


def test_hugging_face_gpt2_weights_give_hugging_faces_logits(tmp_path, tiny_gpt):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=4, n_embd=64, n_head=4, n_positions=32, vocab_size=97,
                                     bos_token_id=0, eos_token_id=0)
    config._attn_implementation = "eager"
    theirs = transformers.GPT2LMHeadModel(config).eval()
    state = theirs.state_dict()
    state["transformer.h.0.attn.bias"] = torch.ones(1, 1, 32, 32).tril()  # the mask buffer older versions save
    torch.save(state, tmp_path / "gpt2.pt")
    ours = build_model("none", tiny_gpt, num_classes=97).eval()
    assert "tensors" in load_pretrained(ours, tmp_path / "gpt2.pt")
    block = ours.stages[0].blocks[3]  # Hugging Face's h.3, its Conv1D weight [in, out] transposed into a Linear
    assert torch.equal(block.attn.c_attn.weight, state["transformer.h.3.attn.c_attn.weight"].t())
    tokens = torch.randint(0, 97, (3, 32))
    with torch.no_grad():
        expected, got = theirs(tokens).logits, ours(tokens)
    assert (got - expected).abs().max().item() < 1e-5


def test_weights_of_another_gpt_size_are_refused_naming_every_shape(tmp_path, tiny_gpt):
    model = build_model("none", tiny_gpt, num_classes=97)
    state = {f"transformer.{k}": v for k, v in model.state_dict().items() if k in ("wte.weight", "wpe.weight")}
    state["transformer.wpe.weight"] = torch.zeros(64, 64)  # a context of 64, not 32
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(PretrainedError) as refused:
        load_pretrained(model, tmp_path / "other.pt")
    assert "\n" not in str(refused.value) and "wpe.weight (64, 64) vs (32, 64)" in str(refused.value)


def test_an_image_task_on_a_token_backbone_is_one_line_before_anything_runs(tmp_path, capsys):
    from lai_bench.bench.cli import main as bench_main
    from lai_bench.config import ConfigError, RunConfig
    from lai_bench.validate import validate

    with pytest.raises(ConfigError, match="task classification trains on images; backbone gpt_nano takes tokens"):
        validate(RunConfig(backbone="gpt_nano"))
    assert bench_main(["--backbone", "gpt_nano", "--methods", "none", "--out", str(tmp_path)]) == 2
    assert "takes tokens" in capsys.readouterr().err and not any(tmp_path.iterdir())
