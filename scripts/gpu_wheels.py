"""Wheels for the bare GPU machine: every runtime dependency of lai_bench that its image lacks.

The list is derived on each run: the `dependencies` of pyproject.toml and what they require in turn (read from
the distributions installed here, markers evaluated for the device's CPython 3.12 on Linux x86-64), minus the
packages of the device image (scripts/gpu-device-packages.txt; the walk stops at those, their own needs are the
image's). Each wheel is fetched at the version installed here, as a CPython 3.12 manylinux x86-64 binary, or,
where PyPI has only a source release, built here into a pure-Python wheel.

    python3 scripts/gpu_wheels.py --dest .whl      # scripts/gpu-prepare.sh runs this
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
DEVICE_PACKAGES = ROOT / "scripts" / "gpu-device-packages.txt"
# The device's interpreter, for the environment markers of Requires-Dist.
DEVICE_MARKERS = {
    "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
    "platform_machine": "x86_64", "os_name": "posix", "extra": "",
}
# pip matches each manylinux tag exactly: the common glibc levels, newest first.
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (39, 35, 34, 31, 28, 27, 24, 17)] + ["manylinux2014_x86_64",
                                                                                       "manylinux1_x86_64"]
MAX_MIB = 48  # a device call carries at most 64 MiB, the working tree included


def device_packages(path: Path = DEVICE_PACKAGES) -> set[str]:
    """Canonical names of the packages the device image already holds."""
    lines = path.read_text().splitlines()
    return {canonicalize_name(line.strip()) for line in lines if line.strip() and not line.startswith("#")}


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """The runtime dependencies pyproject.toml declares (no extras: the device runs no linters)."""
    data = tomllib.loads(pyproject.read_text())
    return [Requirement(text) for text in data["project"]["dependencies"]]


def missing_on_device(requirements: list[Requirement], on_device: set[str]) -> dict[str, str]:
    """{name: version installed here} for every package the device lacks, dependencies included."""
    needed: dict[str, str] = {}
    todo = [r for r in requirements if r.marker is None or r.marker.evaluate(DEVICE_MARKERS)]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in on_device or name in needed:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"gpu-prepare: {req.name} is a dependency of lai_bench but is not installed here; "
                     f"run `pip install -e .` first")
        needed[name] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or sub.marker.evaluate(DEVICE_MARKERS):
                todo.append(sub)
    return dict(sorted(needed.items()))


def fetch_wheel(name: str, version: str, dest: Path) -> None:
    """A CPython 3.12 manylinux x86-64 wheel from the registry, else a pure-Python wheel built here."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(dest),
                f"{name}=={version}"]
    if subprocess.run(download, capture_output=True, text=True).returncode == 0:
        return
    with tempfile.TemporaryDirectory() as build:
        wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", build, f"{name}=={version}"]
        done = subprocess.run(wheel, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"gpu-prepare: no wheel of {name}=={version} for CPython 3.12 and none could be built:\n"
                     f"{done.stderr.strip()}")
        for built in Path(build).glob("*.whl"):
            if not built.name.endswith("-none-any.whl"):
                sys.exit(f"gpu-prepare: {built.name} was built for this machine's Python, not the device's 3.12")
            shutil.move(str(built), dest / built.name)


def check_folder(dest: Path, needed: dict[str, str]) -> int:
    """One wheel per needed package, each installable on CPython 3.12 x86-64 Linux; returns the folder's bytes."""
    wheels = sorted(dest.glob("*.whl"))
    names = {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in wheels}
    if set(names) != set(needed) or len(wheels) != len(needed):
        sys.exit(f"gpu-prepare: wheels {sorted(w.name for w in wheels)} do not match the list {sorted(needed)}")
    for wheel in wheels:
        tags = parse_wheel_filename(wheel.name)[3]
        if not any(t.interpreter in ("py3", "cp312") or (t.abi == "abi3") for t in tags):
            sys.exit(f"gpu-prepare: {wheel.name} is not for CPython 3.12")
        if not any(t.platform == "any" or ("x86_64" in t.platform and "linux" in t.platform) for t in tags):
            sys.exit(f"gpu-prepare: {wheel.name} is not for Linux x86-64")
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    if size > MAX_MIB * 2**20:
        sys.exit(f"gpu-prepare: {dest} holds {size / 2**20:.1f} MiB, more than the {MAX_MIB} MiB allowed "
                 f"(a device call carries 64 MiB with the working tree)")
    return size


def commit_of(root: Path = ROOT) -> str:
    """The commit of the working tree, '-dirty' when it has uncommitted changes to tracked files."""
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD"]).returncode != 0
    return head.stdout.strip() + ("-dirty" if dirty else "")


def prepare(dest: Path) -> dict[str, str]:
    """Rebuild `dest` from scratch with the wheels the device lacks and a COMMIT file."""
    needed = missing_on_device(project_requirements(), device_packages())
    staging = Path(tempfile.mkdtemp(prefix="lai-whl-"))
    try:
        for name, version in needed.items():
            print(f"gpu-prepare: {name}=={version}", flush=True)
            fetch_wheel(name, version, staging)
        (staging / "COMMIT").write_text(commit_of() + "\n")
        size = check_folder(staging, needed)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"gpu-prepare: {len(needed)} wheels, {size / 2**20:.1f} MiB in {dest} (limit {MAX_MIB} MiB)")
    return needed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl", help="folder to (re)write (default: .whl)")
    parser.add_argument("--list", action="store_true", help="print the packages the device lacks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, version in missing_on_device(project_requirements(), device_packages()).items():
            print(f"{name}=={version}")
        return
    prepare(args.dest.resolve())


if __name__ == "__main__":
    main()
