"""What one job runs: a single run (TrainJob, with submitit's preemption held until the run has checkpointed), or,
locally, several runs in turn in one process (TrainSequence); `summary` is what a job returns to the launcher."""
import os
import signal
import threading
from typing import Any

import submitit

from ..core.errors import error_line
from ..train.runlock import RunBusy

# submitit sends its timeout signal 90 s before the time limit: a held signal must reach submitit well before that.
PREEMPTION_GRACE_S = 60.0


class HeldPreemption:
    """Holds submitit's preemption/timeout signal (USR2) until the run has checkpointed at a step all ranks agree on.

    submitit's own handler requeues the job at once, on rank 0 only, wherever the signal lands: with several tasks
    the other ranks would then fail in their next all-reduce. Held, the signal only sets `stop`; the run's ranks
    agree to stop at the same step, rank 0 writes the checkpoint, and `requeue` hands the signal to submitit. If the
    run does not reach a step within `grace_s` (say a long eval), submitit gets it anyway and the run resumes
    from its last epoch checkpoint. Outside a submitit job (or off the main thread) it does nothing: `active` is False.
    """

    def __init__(self, grace_s: float = PREEMPTION_GRACE_S) -> None:
        from ..train.lifecycle import StopFlag

        self.grace_s = grace_s
        self.signum = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
        self.submitit_handler = signal.getsignal(self.signum)
        self.active = callable(self.submitit_handler) and threading.current_thread() is threading.main_thread()
        # In a job, SIGTERM (scancel, Slurm's preemption and time-limit kill) also stops the run: it checkpoints
        # at the current step and exits within seconds instead of training on until Slurm's SIGKILL. Only the held
        # USR2 leads to a requeue; after a SIGTERM the job ends and the next launch resumes the run.
        self.stop = StopFlag(signals=(signal.SIGTERM,)) if self.active else StopFlag()
        self.held = False  # True once submitit's signal arrived
        self._alarm_handler: Any = None

    def __enter__(self) -> "HeldPreemption":
        if self.active:
            signal.signal(self.signum, self._hold)
            self._alarm_handler = signal.signal(signal.SIGALRM, lambda *_: self.requeue())
        return self

    def _hold(self, *_: Any) -> None:
        self.held = True
        self.stop.requested = True
        signal.setitimer(signal.ITIMER_REAL, self.grace_s)

    def requeue(self) -> None:
        """submitit's handler: on rank 0 it checkpoints the submission, requeues the job and exits; elsewhere no-op."""
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.submitit_handler(self.signum, None)

    def __exit__(self, *_: Any) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(self.signum, self.submitit_handler)
            signal.signal(signal.SIGALRM, self._alarm_handler)


class TrainJob(submitit.helpers.Checkpointable):
    """What one job (or each of its tasks) runs: a single run. On preemption or timeout the run stops at a step
    all its processes agree on, checkpoints, and submitit requeues the job with the same arguments
    (Checkpointable); every process then resumes from that checkpoint."""

    def __call__(self, config: dict[str, Any], out_dir: str, grid: str) -> dict[str, Any]:
        from ..config import config_from_dict
        from ..core.plugins import load_plugins
        from ..train.lifecycle import Interrupted, Run

        load_plugins(config.get("plugins") or ())  # before the config is read: they register its names
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:
            import torch

            torch.set_num_threads(int(cpus))
        with HeldPreemption() as held:
            run = Run(config_from_dict(config), out_dir, grid=grid, stop=held.stop)
            try:
                return summary(run.run())
            except RunBusy as busy:  # another job or launcher trains it right now: not this job's failure
                return {"run_id": run.run_id, "name": run.config.name(), "status": "busy", "metrics": {},
                        "detail": str(busy)}
            except Interrupted:
                if not held.active:
                    raise
                if not held.held:  # SIGTERM: cancelled or killed by Slurm; the checkpoint is on disk
                    raise SystemExit(143) from None
                held.requeue()  # rank 0 leaves here (submitit exits after requeueing)
                # Other ranks leave without a result: an error result would read as the job's failure while the
                # requeued job is still to run.
                raise SystemExit(0)


class TrainSequence:
    """What one local job runs: several runs one after another in one process, so a grid of short runs pays the
    interpreter's start and the imports (seconds a run on a laptop) once per job, not once per run. A failed run
    (its record already written by the run) does not stop the ones after it."""

    def __call__(self, configs: list[dict[str, Any]], out_dir: str, grid: str) -> list[dict[str, Any]]:
        from ..config import config_from_dict

        out = []
        for config in configs:
            try:
                out.append(TrainJob()(config, out_dir, grid))
            except Exception as e:
                c = config_from_dict(config)
                out.append({"run_id": c.run_id(), "name": c.name(), "status": "failed", "metrics": {},
                            "detail": f"{type(e).__name__}: {error_line(str(e))}"})
        return out


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The small part of a record a job returns to the launcher."""
    return {"run_id": record["run_id"], "name": record["name"], "status": record["status"],
            "metrics": record.get("metrics", {}), "params": record.get("params"),
            "wall_time_s": record.get("wall_time_s"), "diverged_epoch": record.get("diverged_epoch")}
