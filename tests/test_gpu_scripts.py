"""The GPU check's two scripts: the wheels prepared here for the bare device, and the check's refusal without a GPU."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_wheels  # noqa: E402

# What the device image lacks of lai_bench's runtime needs today (issue 30 names them).
EXPECTED = {"submitit", "fvcore", "iopath", "yacs", "termcolor", "pycocotools", "pydantic", "pydantic-core",
            "annotated-types", "typing-inspection"}


def test_the_list_is_derived_from_pyproject_against_the_device_image():
    needed = gpu_wheels.missing_on_device(gpu_wheels.project_requirements(), gpu_wheels.device_packages())
    assert set(needed) >= EXPECTED
    on_device = gpu_wheels.device_packages()
    assert {"torch", "torchvision", "pandas", "matplotlib", "portalocker", "timm"} <= on_device
    assert not set(needed) & on_device


def test_a_dependency_the_device_has_stops_the_walk(tmp_path):
    (tmp_path / "device.txt").write_text("# a device with pydantic's core\npydantic_core\ntyping-extensions\n")
    needed = gpu_wheels.missing_on_device([gpu_wheels.Requirement("pydantic>=2.7")],
                                          gpu_wheels.device_packages(tmp_path / "device.txt"))
    assert set(needed) == {"pydantic", "annotated-types", "typing-inspection"}
    assert needed["pydantic"] == gpu_wheels.metadata.version("pydantic")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_gpu_check_without_a_gpu_exits_2_with_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent), "OUT": str(out)})
    assert done.returncode == 2
    assert done.stderr.strip() == "gpu-check: no CUDA device visible to torch; nothing to check"
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_gpu_prepare_writes_cp312_linux_wheels_well_under_the_carry_limit(tmp_path):
    """Uses the package registry: every wheel the device lacks, for CPython 3.12 on x86-64 Linux."""
    dest = tmp_path / "whl"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-prepare.sh"), "--dest", str(dest)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert 'carry:     [".whl"]' in done.stdout and "command:   bash scripts/gpu-check.sh" in done.stdout
    wheels = sorted(dest.glob("*.whl"))
    names = {gpu_wheels.canonicalize_name(gpu_wheels.parse_wheel_filename(w.name)[0]) for w in wheels}
    assert names >= EXPECTED and len(names) == len(wheels)
    for wheel in wheels:
        tags = gpu_wheels.parse_wheel_filename(wheel.name)[3]
        compiled = [t for t in tags if t.platform != "any"]
        if compiled:  # pycocotools and pydantic-core: built for the device's interpreter, not this machine's
            assert all(t.interpreter == "cp312" and "x86_64" in t.platform for t in compiled), wheel.name
        else:
            assert all(t.interpreter.startswith("py3") for t in tags), wheel.name
    assert sum(p.stat().st_size for p in dest.iterdir()) < 16 * 2**20
    commit = (dest / "COMMIT").read_text().strip()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert commit.split("-")[0] == head.strip()
    # pip itself agrees that the set installs on the device's Python, offline and without anything else.
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                              "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                              *[a for p in gpu_wheels.PLATFORMS for a in ("--platform", p)],
                              "--target", str(target), *map(str, wheels)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    assert (target / "pydantic_core").is_dir() and (target / "pycocotools").is_dir()
