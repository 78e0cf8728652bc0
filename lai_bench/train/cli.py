"""python -m lai_bench.train: one run from the command line (every RunConfig field a flag; model_opts, task_opts
and synthetic as KEY=VALUE pairs). Under torchrun (or a submitit job with several tasks) the run is data-parallel."""
import argparse
import sys
import typing
from typing import Any

from ..config import RECIPE_FIELDS, ConfigError, RunConfig
from ..core.files import is_disk_full
from ..runtime.distributed import is_main
from .lifecycle import Interrupted, Run
from .runlock import RunBusy


def parse_value(text: str) -> Any:
    """Command-line values as YAML scalars/lists: 0.1, true, [100, 150], dsu; text that is not YAML stays text.

    YAML 1.1 reads 1e-3 as text: the config schema reads it as the number for number fields.
    """
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def key_values(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    """`KEY=VALUE` pairs (--opt, --task-opt, --synthetic) as a dict, values read by `parse_value`; ValueError naming
    the flag and the malformed pair."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects KEY=VALUE, got {pair!r}")
        out[key] = parse_value(value)
    return out


def parse_pairs(pairs: list[str], flag: str) -> dict[str, Any]:
    """`key_values`; a malformed pair exits 2 with one error line."""
    try:
        return key_values(pairs, flag)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def field_help(f) -> str:
    """A RunConfig field's help: its `help` metadata (or its name), for recipe fields where unset leads, and for the
    fields the tasks fill what the registered tasks allow."""
    text = f.metadata.get("help") or f.name.replace("_", " ")
    return text + ("; recipe value if unset" if f.name in RECIPE_FIELDS else "") + _registered(f.name)


def _registered(name: str) -> str:
    """What the task registry allows for `task`, `dataset` and `task_opts`, read when the help is printed."""
    from ..tasks import default_task, list_tasks, task_class, task_options

    if name == "task":
        return f" ({', '.join(list_tasks())}; unset: {default_task()})"
    if name == "dataset":
        return " (" + "; ".join(f"{task}: {', '.join(d.name for d in task_class(task).datasets)}"
                               for task in list_tasks()) + ")"
    if name == "task_opts":
        return " (" + "; ".join(f"{task}: " + ", ".join(f"{k}={v}" for k, v in task_options(task).items())
                               for task in list_tasks() if task_options(task)) + ")"
    return ""


def build_parser():
    from dataclasses import fields

    class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
        """Adds "(default: X)" once, and only where it says something: not None (the help says what unset means),
        not where the help already names its default."""

        def _get_help_string(self, action):
            if action.default is None or "default" in (action.help or ""):
                return action.help
            return super()._get_help_string(action)

    parser = argparse.ArgumentParser(
        prog="python -m lai_bench.train",
        description="Train and evaluate one run; write its JSON record. Under torchrun (or in a submitit job with "
                    "several tasks) the run is data-parallel over the processes: gloo on CPU, nccl on GPUs.",
        formatter_class=HelpFormatter)
    config_fields = {f.name: f for f in fields(RunConfig)}
    plain = typing.get_type_hints(RunConfig)  # the field types without their constraints: bool, str, int | None ...
    for f in config_fields.values():
        if f.name in ("model_opts", "task_opts", "synthetic"):
            continue
        default = None if f.name in RECIPE_FIELDS else f.default
        flag = "--" + f.name.replace("_", "-")
        if plain[f.name] in (bool, bool | None):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                help=field_help(f))
        else:  # text fields take the text as it is (a --data-root of 2024 is a folder); the rest reads as YAML
            parser.add_argument(flag, dest=f.name, type=str if plain[f.name] is str else parse_value,
                                default=default, help=field_help(f))
    parser.add_argument("--opt", action="append", metavar="KEY=VALUE",
                        help=field_help(config_fields["model_opts"]) + ", e.g. --opt cell=gru --opt "
                                                                      "forward_path=false (repeatable)")
    parser.add_argument("--task-opt", action="append", metavar="KEY=VALUE",
                        help=field_help(config_fields["task_opts"]) + " (repeatable)")
    parser.add_argument("--synthetic", action="append", metavar="KEY=VALUE",
                        help=field_help(config_fields["synthetic"]) + " (repeatable)")
    parser.add_argument("--out", default="results/manual", help="folder of the run record <run_id>.json")
    parser.add_argument("--checkpoint-dir", default=None, help="checkpoint folder (default: OUT/checkpoints)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint and start over")
    return parser


# A synthetic-data run longer than this is most likely a default recipe meant for real data.
SYNTHETIC_EPOCHS_WARNING = 10


def main(argv: list[str] | None = None) -> int:
    from ..config import config_from_dict
    from ..core.plugins import PluginError, load_plugins

    args = build_parser().parse_args(argv)
    cli_only = ("opt", "task_opt", "synthetic", "out", "checkpoint_dir", "no_resume")
    values = {k: v for k, v in vars(args).items() if k not in cli_only}
    values["model_opts"] = parse_pairs(args.opt, "--opt")
    values["task_opts"] = parse_pairs(args.task_opt, "--task-opt")
    values["synthetic"] = parse_pairs(args.synthetic, "--synthetic")
    try:
        load_plugins(values.get("plugins") or ())  # before the config is read: they register its names
        run = Run(config_from_dict(values), args.out, args.checkpoint_dir)
    except (ConfigError, PluginError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    say = print if is_main() else (lambda *a, **k: None)  # under torchrun: one copy of each line
    resolved = run.config
    if run.task.dataset(resolved.dataset).synthetic and resolved.epochs > SYNTHETIC_EPOCHS_WARNING:
        say(f"warning: {resolved.epochs} epochs of the {resolved.recipe!r} recipe on synthetic data; "
            "for a quick check pass --recipe smoke (or --epochs N)", file=sys.stderr)
    say(f"run {run.run_id} ({run.config.name()}) -> {run.record_path}", flush=True)
    try:
        record = run.run(resume=not args.no_resume)
    except RunBusy as e:  # on every rank: rank 0 decided before any joined the group
        say(f"error: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        say(f"interrupted; resume with the same command (checkpoint {e})", file=sys.stderr)
        return 143
    except Exception as e:  # the record holds the traceback
        where = "" if is_disk_full(e) else f" (traceback in {run.record_path})"
        print(f"failed: {type(e).__name__}: {e}{where}", file=sys.stderr)
        return 1
    say(f"{record['status']}: {run.task.headline(record['metrics'])} -> {run.record_path}")
    return 0 if record["status"] == "completed" else 3


