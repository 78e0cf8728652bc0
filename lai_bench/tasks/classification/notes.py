"""What the launcher's final table says under classification runs: the synthetic data set's chance level, and each
run that trained to convergence on it but stayed short, with its loss curve to say why."""
import math
from collections.abc import Sequence
from typing import Any

from ...data import dataset_info

SYNTHETIC = "synthetic"
SHORT_OF = 90.0  # top-1 % every method reaches on the synthetic set when it trains well


def final_notes(cls: Any, specs: Sequence[Any], records: dict[str, dict]) -> list[str]:
    synthetic = [spec for spec in specs if spec.config.dataset == SYNTHETIC]
    classes = sorted({dataset_info(SYNTHETIC, synthetic=spec.config.synthetic).num_classes for spec in synthetic})
    notes = []
    if classes:
        chance = " / ".join(f"{100 / c:.3g} %" for c in classes)
        notes.append(f"synthetic data: chance is {chance} top-1 (balanced classes); a toy task, not a benchmark")
    return notes + below_level(synthetic, records)


def below_level(specs: Sequence[Any], records: dict[str, dict], level: float = SHORT_OF) -> list[str]:
    """Each completed run of synthetic data trained to convergence (not a smoke check) below `level` % top-1, with
    its train loss per epoch, which says why (still falling: too few epochs; above a guess's ln(classes): unstable
    at this lr)."""
    notes = []
    for spec in specs:
        c, record = spec.config, records.get(spec.run_id) or {}
        top1 = (record.get("metrics") or {}).get("top1_final")
        if c.max_steps_per_epoch is not None or record.get("status") != "completed" or top1 is None or top1 >= level:
            continue
        losses = [h["train_loss"] for h in record.get("history", []) if "train_loss" in h]
        head = f"below {level:.0f} %: {spec.name} {top1:.1f} %; "
        if not losses:
            notes.append(head + "its record has no train loss to say why")
            continue
        guess = math.log(dataset_info(SYNTHETIC, synthetic=c.synthetic).num_classes)
        why = (f"above a guess's ln(classes) = {guess:.2f} in an epoch: unstable at lr {c.lr:g}" if max(losses) > guess
               else "still falling: more epochs would help")
        notes.append(head + f"its train loss by epoch {', '.join(f'{x:.2f}' for x in losses)} ({why})")
    return notes
