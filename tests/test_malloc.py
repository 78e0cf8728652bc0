"""On glibc, keep_freed_memory stops a training step from page-faulting its big temporaries in anew every time."""
import json
import platform
import subprocess
import sys

import pytest

STEPS = """
import json, resource, sys, torch
from lai_bench.malloc import keep_freed_memory
from lai_bench.models import build_model
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.manual_seed(0)
model = build_model("mrla_light", "cifar", 20, 10)
x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.nn.functional.cross_entropy(model(x), y).backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def page_faults_per_step(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_training_steps_reuse_freed_memory_instead_of_page_faulting_it_in_again():
    system, keep = page_faults_per_step("system"), page_faults_per_step("keep")
    assert not system["applied"] and keep["applied"]
    # Seen here: ~9,000-13,000 faults per step with glibc's defaults; once memory is kept, 0-10, and now and
    # then ~1,000 in a step where the heap still grows. Compared: the median of the last three steps.
    system_faults, keep_faults = sorted(system["faults"][-3:])[1], sorted(keep["faults"][-3:])[1]
    assert system_faults > 2000
    assert keep_faults < system_faults / 5
