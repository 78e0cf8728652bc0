"""Data-parallel runs on CPU (gloo): N processes train what one process trains, count every eval sample once,
write one record, stop together and resume together. Plus the pieces: world, batch split, lr rule, grid checks."""
import faulthandler
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from slurm_util import require_slurm
from torch import nn

import lai_bench.train.lifecycle as train
from lai_bench.config import ConfigError, RunConfig, effective_lr, split_batch
from lai_bench.data import build_loaders
from lai_bench.launch.grid import GridError, expand, smoke, tasks_per_node, world_size
from lai_bench.launch.launcher import HeldPreemption, make_executor
from lai_bench.models import build_model
from lai_bench.runtime import checkpoint
from lai_bench.runtime.distributed import World, pick_device, world_from_env
from lai_bench.tasks.classification import task as classification

# 48 train samples / global batch 8 = 6 steps per epoch; 13 eval samples: odd, so the 2 shards differ (7 and 6).
SYNTH = {"num_classes": 4, "image_size": 16, "train_size": 48, "eval_size": 13}
# dla_b at depth 8 leaves some DSU parameters unused in every step: DDP must cope (static_graph).
TINY = dict(method="dla_b", depth=8, dataset="synthetic", synthetic=SYNTH, recipe="smoke", epochs=2, batch_size=8,
            eval_batch_size=4, lr=0.05, drop_path=0.0, measure=False, device="cpu")
STEPS_PER_EPOCH = 6
HANG_S = 300  # a process still running after this long dumps its stack and exits: a failure, not a stuck suite
INITIAL: dict = {}  # the weights training started from, noted by the patched model builder


# ---------------------------------------------------------------------------------------------- helpers


def per_sample_norms(model: nn.Module) -> nn.Module:
    """Every BatchNorm2d replaced by GroupNorm(1, C) with the same affine init.

    Why: BatchNorm normalises with the statistics of the batch it sees, which in DDP is the process's shard, so
    2 processes x 4 samples compute something else than 1 process x 8 (by design: sync_bn is off by default, as in
    the papers). torch.nn.SyncBatchNorm would make them equal but rejects CPU tensors (torch 2.13, gloo: "expected
    input tensor to be on GPU"). Per-sample normalisation makes every sample's gradient independent of its
    batch-mates, so the two runs must agree to float precision - and anything else that differs (sample order,
    gradient averaging, lr, resume) shows up.
    """
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d):
            norm = nn.GroupNorm(1, child.num_features)
            with torch.no_grad():
                norm.weight.copy_(child.weight)
                norm.bias.copy_(child.bias)
            setattr(model, name, norm)
        else:
            per_sample_norms(child)
    return model


def patch_for_comparison(log_file: Path) -> None:
    """In this process: per-sample norms, and a log line for every record and checkpoint written (who wrote what)."""
    build, write, save = classification.build_model, train.write_record, checkpoint.save_atomic

    def note(what: str) -> None:
        with open(log_file, "a") as f:
            f.write(json.dumps([os.environ.get("RANK", "0"), what]) + "\n")

    def write_record(path, record, **kw):
        note(f"record:{record['status']}")
        return write(path, record, **kw)

    def save_atomic(obj, path):
        note(f"checkpoint:{obj['epoch']}:{obj['step']}")
        return save(obj, path)

    def build_model(*args, **kwargs):
        model = per_sample_norms(build(*args, **kwargs))
        INITIAL.update({k: v.clone() for k, v in model.state_dict().items()})
        return model

    classification.build_model = build_model
    train.write_record, checkpoint.save_atomic = write_record, save_atomic


class StopAfter(train.StopFlag):
    """Asks for a stop at this process's n-th check (one check per step), like a signal reaching one rank only."""

    def __init__(self, n: int) -> None:
        super().__init__(signals=())
        self.checks, self.n = 0, n

    @property
    def requested(self) -> bool:
        self.checks += 1
        return self.checks == self.n

    @requested.setter
    def requested(self, value: bool) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, size: int, port: int, config: dict, out: str, stop_rank: int, stop_after: int) -> None:
    """One process of a data-parallel run, set up the way torchrun sets its workers up."""
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size))
    torch.set_num_threads(1)
    patch_for_comparison(Path(out) / f"writes.rank{rank}.jsonl")
    stop = StopAfter(stop_after) if rank == stop_rank else train.StopFlag(signals=())
    lines = []
    try:
        record = train.Run(RunConfig(**config), out, stop=stop, log=lines.append).run()
        outcome = {"status": record["status"], "record": record}
    except train.Interrupted:
        outcome = {"status": "interrupted"}
    outcome["log"] = lines
    (Path(out) / f"outcome.rank{rank}.json").write_text(json.dumps(outcome))


def run_processes(out: Path, size: int = 2, config: dict = TINY, stop_rank: int = -1, stop_after: int = 0) -> list:
    """Train `config` with `size` processes (gloo); each process's outcome: status, its record, its log lines."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("outcome.rank*.json"):
        old.unlink()
    mp.spawn(_worker, args=(size, free_port(), config, str(out), stop_rank, stop_after), nprocs=size)
    return [json.loads((out / f"outcome.rank{r}.json").read_text()) for r in range(size)]


def writes(out: Path) -> dict:
    """rank -> what it wrote, in order."""
    found = {}
    for path in sorted(out.glob("writes.rank*.jsonl")):
        for line in path.read_text().splitlines():
            rank, what = json.loads(line)
            found.setdefault(rank, []).append(what)
    return found


def final_weights(out: Path, config: dict = TINY) -> dict:
    run_id = RunConfig(**config).run_id()
    return torch.load(out / "checkpoints" / f"{run_id}.final.pt", weights_only=False)["model"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: the same run in this one process, with the same per-sample norms."""
    out = tmp_path_factory.mktemp("one")
    threads = torch.get_num_threads()
    saved = classification.build_model, train.write_record, checkpoint.save_atomic
    torch.set_num_threads(1)
    try:
        patch_for_comparison(out / "writes.rank0.jsonl")
        record = train.Run(RunConfig(**TINY), out, log=lambda s: None).run()
    finally:
        classification.build_model, train.write_record, checkpoint.save_atomic = saved
        torch.set_num_threads(threads)
    return out, record, dict(INITIAL)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """The same run, data-parallel over 2 processes: (folder, each process's outcome)."""
    out = tmp_path_factory.mktemp("two")
    return out, run_processes(out)


def assert_same_weights(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        # float32 after 12 SGD steps: the shards' gradients are summed in another order than the whole batch's
        # (PyTorch's depthwise-conv weight gradient put one of 288 weights 3.6e-6 apart from the one-process run).
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")


def assert_same_history(got: list, want: list) -> None:
    assert [h["epoch"] for h in got] == [h["epoch"] for h in want]
    for g, w in zip(got, want):
        for key in ("train_loss", "train_top1", "eval_loss", "eval_top1", "eval_top5", "lr"):
            assert g[key] == pytest.approx(w[key], rel=1e-4, abs=1e-6), key
        assert g["eval_samples"] == w["eval_samples"] == SYNTH["eval_size"]


# ---------------------------------------------------------------------------------------------- the story


def test_two_processes_train_the_weights_of_one_process_and_write_one_record(one_process, two_processes):
    ref_dir, reference, init = one_process
    tmp_path, outcomes = two_processes
    assert [o["status"] for o in outcomes] == ["completed", "completed"]
    record = json.loads((tmp_path / f"{reference['run_id']}.json").read_text())
    assert record["run_id"] == reference["run_id"]  # the number of processes is not part of what is computed
    # Only rank 0 wrote: one record per epoch ("running") and the final one, one checkpoint per epoch.
    assert writes(tmp_path) == {"0": ["checkpoint:1:0", "record:running", "checkpoint:2:0", "record:running",
                                      "record:completed"]}
    assert (record["world_size"], record["batch_per_process"], record["global_batch_size"]) == (2, 4, 8)
    assert record["backend"] == "gloo" and record["lr_effective"] == 0.05
    assert (reference["world_size"], reference["batch_per_process"], reference["backend"]) == (1, 8, None)

    got, want = final_weights(tmp_path), final_weights(ref_dir)
    assert_same_weights(got, want)
    # The comparison can fail: training moved the weights far more than the tolerance.
    assert max(float((want[k] - init[k]).abs().max()) for k in want) > 1e-2
    assert_same_history(record["history"], reference["history"])
    assert outcomes[1]["log"] == [] and any("epoch 2/2" in line for line in outcomes[0]["log"])


def test_two_processes_count_every_eval_sample_exactly_once(two_processes):
    """The recorded accuracy over 2 shards (7 + 6 samples) is the one-process accuracy over all 13."""
    tmp_path, outcomes = two_processes
    entry = outcomes[0]["record"]["history"][-1]
    assert entry["eval_samples"] == 13
    model = per_sample_norms(build_model("dla_b", "cifar", 8, 4))
    model.load_state_dict(final_weights(tmp_path))
    _, loader, _ = build_loaders("synthetic", 8, 13, synthetic=SYNTH)
    alone = classification.evaluate(model, loader, RunConfig(**TINY).resolved(), torch.device("cpu"))
    assert alone["eval_samples"] == 13
    assert entry["eval_top1"] == pytest.approx(alone["eval_top1"]) and entry["eval_top5"] == pytest.approx(
        alone["eval_top5"])
    assert entry["eval_loss"] == pytest.approx(alone["eval_loss"], rel=1e-5)


@pytest.mark.slow
def test_a_stop_seen_by_one_rank_stops_both_at_one_step_and_they_resume_to_the_same_weights(one_process, tmp_path):
    ref_dir, reference, _ = one_process
    # Rank 1 alone is asked to stop at its 8th step (epoch 2, step 2): both must stop there, or rank 0 would wait
    # forever in its next gradient all-reduce.
    cut = run_processes(tmp_path, stop_rank=1, stop_after=STEPS_PER_EPOCH + 2)
    assert [o["status"] for o in cut] == ["interrupted", "interrupted"]
    assert writes(tmp_path) == {"0": ["checkpoint:1:0", "record:running", "checkpoint:1:2"]}
    resumed = run_processes(tmp_path)
    assert [o["status"] for o in resumed] == ["completed", "completed"]
    assert any("resumed from" in line and "epoch 1 step 2" in line for line in resumed[0]["log"])
    assert_same_weights(final_weights(tmp_path), final_weights(ref_dir))
    assert_same_history(resumed[0]["record"]["history"], reference["history"])


def test_the_cli_under_torchrun_trains_one_run_with_two_processes(tmp_path):
    args = ["--method", "none", "--depth", "8", "--dataset", "synthetic", "--recipe", "smoke", "--epochs", "1",
            "--batch-size", "8", "--eval-batch-size", "8", "--measure-steps", "1", "--device", "cpu",
            "--out", str(tmp_path), *[a for k, v in SYNTH.items() for a in ("--synthetic", f"{k}={v}")]]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "lai_bench.train", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("completed: top1") == 1  # rank 0 alone prints
    [path] = [p for p in tmp_path.glob("*.json")]
    record = json.loads(path.read_text())
    assert record["status"] == "completed" and record["world_size"] == 2 and record["batch_per_process"] == 4
    assert record["history"][0]["eval_samples"] == 13
    # Measured by rank 0 alone after training (outside the process group), at the per-process batch.
    assert record["params"] > 0 and record["throughput"]["batch_size"] == 4


# ---------------------------------------------------------------------------------------------- the pieces


def test_the_world_comes_from_torchrun_variables_or_is_one_process():
    assert world_from_env({}) == World()
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    world = world_from_env(env)
    assert (world.rank, world.size, world.local_rank, world.nodes, world.is_main) == (3, 8, 1, 4, False)
    with pytest.raises(ValueError, match=r"RANK=2 and WORLD_SIZE=2: need"):
        world_from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match=r"WORLD_SIZE='two' must be an integer"):
        world_from_env({"RANK": "0", "WORLD_SIZE": "two"})


def test_a_multi_task_submitit_job_exports_its_rendezvous(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "")  # noted, so that teardown removes what the export adds
        monkeypatch.delenv(key)
    # What Slurm and submitit set in task 1 of a 2-task job on node "gpu07".
    for key, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2",
                       "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
                       "SLURM_JOB_NODELIST": "gpu07"}.items():
        monkeypatch.setenv(key, value)
    world = world_from_env()
    assert (world.rank, world.size, world.local_rank) == (1, 2, 1)
    assert os.environ["MASTER_ADDR"] == "gpu07" and int(os.environ["MASTER_PORT"]) > 0
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task: no process group, nothing exported
    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key)
    assert world_from_env().size == 1 and "RANK" not in os.environ


def test_devices_follow_the_local_rank():
    world = World(rank=5, size=8, local_rank=1, local_size=4)
    assert pick_device("cpu", world) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device 'cuda:1' would put all 8 processes on one GPU; allowed"):
        pick_device("cuda:1", world)


def test_batch_size_is_global_and_must_split_evenly():
    assert split_batch(256, 8) == 32
    with pytest.raises(ConfigError, match=r"batch_size 100 is the global batch and must divide by the 8 processes "
                                          r"of the run \(nodes x tasks_per_node\); allowed: a multiple of 8, "
                                          r"e.g. 96 or 104"):
        split_batch(100, 8)


def test_linear_lr_scaling_is_relative_to_the_recipe_batch():
    c = RunConfig(recipe="imagenet", backbone="imagenet", depth=50, dataset="imagenet", batch_size=1024)
    assert effective_lr(c.resolved()) == 0.1  # lr_scaling none: as given
    assert effective_lr(RunConfig(**{**c.to_dict(), "lr_scaling": "linear"}).resolved()) == pytest.approx(0.4)
    cifar = RunConfig(lr_scaling="linear", batch_size=64).resolved()
    assert effective_lr(cifar) == pytest.approx(0.05)
    with pytest.raises(ConfigError, match=r"lr_scaling must be one of none, linear, got 'sqrt'"):
        train.Run(RunConfig(lr_scaling="sqrt"), "unused")
    with pytest.raises(ConfigError, match=r"sync_bn must be true or false, got 'yes'"):
        train.Run(RunConfig(sync_bn="yes"), "unused")


def test_the_new_options_leave_existing_run_ids_unchanged():
    # Ids computed before sync_bn and lr_scaling existed: finished runs of existing grids are still found.
    assert RunConfig().run_id() == "d811d79410b2"
    assert RunConfig(method="none", backbone="imagenet", depth=50, dataset="imagenet",
                     recipe="imagenet").run_id() == "ce256447322f"
    assert RunConfig(sync_bn=True).run_id() != RunConfig().run_id()
    assert RunConfig(lr_scaling="linear").run_id() != RunConfig().run_id()


def test_sync_bn_with_several_cpu_processes_is_one_clear_error():
    run = train.Run(RunConfig(**TINY, sync_bn=True), "unused")
    with pytest.raises(ConfigError, match=r"sync_bn needs CUDA devices.*allowed on CPU: sync_bn false"):
        run._check_world(World(rank=0, size=2, device=torch.device("cpu")))
    assert run._check_world(World(device=torch.device("cpu"))) == 8  # one process: plain BatchNorm, no error


def test_a_single_process_sync_bn_run_trains(tmp_path):
    record = train.Run(RunConfig(**{**TINY, "method": "none", "epochs": 1, "sync_bn": True}), tmp_path,
                       log=lambda s: None).run()
    assert record["status"] == "completed" and record["config"]["sync_bn"] is True


def test_grids_default_to_one_task_per_gpu_and_check_the_batch(tmp_path):
    assert tasks_per_node({"gpus_per_node": 4}) == 4 and world_size({"gpus_per_node": 4, "nodes": 2}) == 8
    assert world_size({"gpus_per_node": 4, "tasks_per_node": 1}) == 1 and world_size({}) == 1
    base = {**TINY, "batch_size": 12}
    with pytest.raises(GridError, match=r"g.yaml: run .*batch_size 12 is the global batch and must divide by the 8 "
                                        r"processes"):
        expand({"base": base, "slurm": {"gpus_per_node": 4, "nodes": 2}}, where="g.yaml")
    with pytest.raises(GridError, match=r"slurm.tasks_per_node must be an integer >= 1, got 0"):
        expand({"base": base, "slurm": {"tasks_per_node": 0}})
    grid = expand({"base": base, "slurm": {"tasks_per_node": 4}})
    assert {s.config.batch_size % 4 for s in smoke(grid).runs} == {0}
    executor = make_executor("local", tmp_path, {"tasks_per_node": 2})
    assert executor._executor.parameters["tasks_per_node"] == 2


@pytest.mark.slurm
def test_a_slurm_executor_asks_for_one_task_per_gpu(tmp_path):
    require_slurm()  # submitit's Slurm executor needs srun
    executor = make_executor("slurm", tmp_path, {"partition": "gpu", "gpus_per_node": 4})
    assert executor._executor.parameters["ntasks_per_node"] == 4


def test_a_held_preemption_signal_stops_the_run_first_and_reaches_submitit_after():
    calls = []
    submitit_handler = lambda signum, frame: calls.append(signum)  # noqa: E731 - stands for submitit's handler
    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        with HeldPreemption(grace_s=5.0) as held:
            assert held.active and not held.stop.requested
            os.kill(os.getpid(), signal.SIGUSR2)
            assert held.stop.requested and calls == []  # held: the run checkpoints at its next step first
            held.requeue()
            assert calls == [signal.SIGUSR2]
        with HeldPreemption(grace_s=0.2):
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(1.0)  # no step boundary within the grace: submitit gets the signal anyway
            assert len(calls) == 2
        assert signal.signal(signal.SIGUSR2, previous) is submitit_handler  # put back on the way out
    finally:
        signal.signal(signal.SIGUSR2, previous)
