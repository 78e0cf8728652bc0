"""The plan of a launch: which runs to submit and which to leave alone (with the reason), from each run's one state
(state.py); computed once per launch."""
from dataclasses import dataclass, field
from pathlib import Path

from .grid import Grid, GridPoint
from .jobbook import JobBook
from .state import RunState, grid_states


@dataclass
class Plan:
    """What a launch will do: runs to submit, runs left alone (with the reason), and every run's state."""

    submit: list[GridPoint] = field(default_factory=list)
    skip: list[tuple[GridPoint, str]] = field(default_factory=list)
    states: dict[str, RunState] = field(default_factory=dict)

    def live(self) -> list[GridPoint]:
        """The runs other live processes train (their lock is held, or their Slurm job is in the queue)."""
        return [spec for spec, _ in self.skip if self.states[spec.run_id].live]


def grid_dir(results: Path, grid: Grid) -> Path:
    return Path(results) / grid.name


def make_plan(grid: Grid, results: Path, rerun_failed: bool = False, book: JobBook | None = None) -> Plan:
    """Each run's state (state.py) decides: completed and live runs are left alone, failed, diverged and
    cancelled ones rerun only with `rerun_failed`, interrupted, corrupt and missing ones are submitted."""
    folder = grid_dir(results, grid)
    plan = Plan(states=grid_states(folder, [spec.run_id for spec in grid.runs], book))
    for spec in grid.runs:
        state = plan.states[spec.run_id]
        if state.to_submit(rerun_failed):
            plan.submit.append(spec)
        else:
            plan.skip.append((spec, state.skip_reason()))
    return plan
