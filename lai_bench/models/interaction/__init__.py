"""One file per layer-interaction method; importing this package registers them all."""
from . import base, dense, dianet, dla, dwa, eca, hc, kcla, laurel, mrla, rla, se  # noqa: F401
from .base import Interaction, StageSpec

__all__ = ["Interaction", "StageSpec"]
