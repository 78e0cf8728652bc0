"""Pretrained weights by name: a state_dict file (e.g. a timm DeiT's or a Hugging Face GPT2LMHeadModel's
`state_dict()` saved with torch.save) into a built model, for method `none` and for the shared parts of every method
(the method's own parameters keep their initialisation)."""
import os
from pathlib import Path

import torch
from torch import nn

METHOD_PARTS = ".interaction."  # where a stage's method keeps its own parameters and buffers
CLASSIFIER = "head."


class PretrainedError(ValueError):
    """Weights that do not fit the model; the message lists every key that is missing, unexpected or mis-shaped."""


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> str:
    """Load the state_dict file at `path` into `model` by name; returns what was loaded, in one line.

    Names are mapped by the model's `source_key` where it has one (a ViT maps timm's `blocks.i` to its stages, a GPT
    Hugging Face's `transformer.h.i`; None drops a source tensor the model has no use for), tensors by its
    `source_tensor(source_name, tensor)` (a GPT transposes Hugging Face's Conv1D weights). The
    method's own parameters may be missing (they keep their init); a classifier of another shape (fine-tuning to
    other classes) is left at its init; any other missing, unexpected or mis-shaped key is one PretrainedError
    listing them all.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise PretrainedError(f"pretrained {path}: not a readable state_dict file ({err})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PretrainedError(f"pretrained {path}: a {type(state).__name__}, not a state_dict")
    rename = getattr(model, "source_key", lambda name: name)
    convert = getattr(model, "source_tensor", lambda name, tensor: tensor)
    state = {rename(name): convert(name, tensor) for name, tensor in state.items() if rename(name) is not None}
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if METHOD_PARTS not in k)
    misshaped = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    new_head = [k for k in misshaped if k.startswith(CLASSIFIER)]
    misshaped = [k for k in misshaped if k not in new_head]
    if unexpected or missing or misshaped:
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in misshaped]
        raise PretrainedError(f"pretrained {path} does not fit the model: missing {missing or 'none'}; unexpected "
                              f"{unexpected or 'none'}; mis-shaped {shapes or 'none'}")
    loadable = {k: v for k, v in state.items() if k not in new_head}
    model.load_state_dict(loadable, strict=False)
    kept = len([k for k in own if METHOD_PARTS in k and k not in state])
    head = f"; classifier re-initialised for {own[new_head[0]].shape[0]} classes" if new_head else ""
    own_init = f"; the method's {kept} own tensors keep their init" if kept else ""
    return f"{len(loadable)} tensors from {path}{own_init}{head}"
