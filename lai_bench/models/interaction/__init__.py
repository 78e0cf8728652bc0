"""One file per layer-interaction method; importing this package registers them all (the registry imports none of
them). `Stage` (stage.py) runs a backbone's blocks through a method's hooks."""
from . import base, dense, dianet, dla, dwa, eca, hc, kcla, laurel, mrla, rla, se  # noqa: F401
from .base import Interaction, StageSpec
from .stage import Stage

__all__ = ["Interaction", "Stage", "StageSpec"]
