"""Helpers for tests that need a real Slurm cluster.

The cluster is the loopback one from ``scripts/slurm-local.sh start``. Tests use

    pytestmark = pytest.mark.slurm

    @pytest.fixture(autouse=True, scope="module")
    def _slurm():
        require_slurm()

and are skipped (with the reason) when no cluster answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

DEFAULT_STATE_DIR = "/tmp/lai_bench_slurm"
READY_STATES = frozenset({"idle", "mix", "mixed", "alloc", "allocated"})
SINFO_TIMEOUT_S = 5.0


def find_slurm_conf() -> Path | None:
    """The slurm.conf to use: $SLURM_CONF, else the one slurm-local.sh writes."""
    env_conf = os.environ.get("SLURM_CONF")
    if env_conf:
        return Path(env_conf)
    local = Path(os.environ.get("LAI_SLURM_DIR") or DEFAULT_STATE_DIR) / "slurm.conf"
    if local.is_file():
        return local
    return None


def slurm_reachable() -> tuple[bool, str]:
    """Whether sinfo answers quickly and reports a usable node; else why not."""
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return False, "sinfo not found on PATH (no Slurm client installed)"
    conf = find_slurm_conf()
    env = dict(os.environ)
    if conf is not None:
        if not conf.is_file():
            return False, f"SLURM_CONF={conf} does not exist"
        env["SLURM_CONF"] = str(conf)
    try:
        proc = subprocess.run(
            [sinfo, "-h", "-o", "%t"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=SINFO_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return False, f"sinfo did not answer within {SINFO_TIMEOUT_S:.0f}s"
    except OSError as exc:
        return False, f"sinfo could not run: {exc}"
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        detail = msg[-1] if msg else f"exit code {proc.returncode}"
        which = f"SLURM_CONF={conf}" if conf is not None else "no slurm.conf found"
        return False, f"sinfo failed ({which}): {detail}; start one with scripts/slurm-local.sh start"
    states = [s.strip() for s in proc.stdout.split()]
    if not any(s in READY_STATES for s in states):
        return False, f"no idle/mixed/allocated Slurm node (sinfo states: {states or 'none'})"
    where = f" via {conf}" if conf is not None else ""
    return True, f"slurm reachable{where}"


def require_slurm() -> Path | None:
    """Skip the calling test unless Slurm is reachable; then export SLURM_CONF."""
    import pytest

    ok, reason = slurm_reachable()
    if not ok:
        pytest.skip(reason)
    conf = find_slurm_conf()
    if conf is not None:
        os.environ["SLURM_CONF"] = str(conf)
    return conf
