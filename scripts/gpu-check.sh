#!/usr/bin/env bash
# The GPU check: on one CUDA GPU, the tests that need CUDA, then the benchmark of every method: logs, CSVs and
# plots. Runs on a bare, offline machine: where .whl/ is there (bash scripts/gpu-prepare.sh writes it), the
# wheels lai_bench needs are installed from it into a temporary site, nothing fetched, and the repository root
# goes on the path (lai_bench itself is not installed). Fits 6 minutes: each stage has its own time limit and
# writes what it measured before the next starts (a bench cut short leaves its rows in a -partial.csv).
#
#   bash scripts/gpu-check.sh                        # everything
#   STAGES="tests cifar" bash scripts/gpu-check.sh   # some stages again
#
# Results: $OUT/gpu-<date>-<commit>.tar.gz plus $OUT/summary.txt when OUT is set (the device tool's return
# folder brings back at most 8 files), else the folder $OUT_DIR, else analysis/bench/gpu-<date>-<commit>/.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
repo=$(pwd)

if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu-check: no CUDA device visible to torch; nothing to check" >&2
    exit 2
fi

site=$(mktemp -d /tmp/lai-site-XXXXXX)
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        .whl/*.whl || { echo "gpu-check: installing the wheels of .whl/ failed" >&2; exit 3; }
fi
export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
python3 - <<'PY' || exit 3
import importlib, sys
for name in ("pydantic", "submitit", "fvcore", "pycocotools", "yaml", "pandas", "matplotlib", "lai_bench"):
    try:
        importlib.import_module(name)
    except ImportError as e:
        sys.exit(f"gpu-check: cannot import {name} ({e}); run bash scripts/gpu-prepare.sh here and carry .whl")
import timm
if int(timm.__version__.split(".")[0]) < 1:
    sys.exit(f"gpu-check: timm {timm.__version__} is older than the 1.0 lai_bench needs")
PY

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || cut -c1-12 .whl/COMMIT 2>/dev/null || echo unknown)
name=gpu-$(date -u +%Y%m%d)-${commit}
if [[ -n ${OUT:-} ]]; then
    out=$(mktemp -d /tmp/lai-gpu-XXXXXX)/$name
else
    out=${OUT_DIR:-analysis/bench/$name}
fi
mkdir -p "$out"
python3 - <<'PY' | tee "$out/device.txt"
import sys, timm, torch
print(f"python {sys.version.split()[0]} | torch {torch.__version__} | CUDA {torch.version.cuda} | "
      f"cuDNN {torch.backends.cudnn.version()} | timm {timm.__version__}")
print(f"gpu {torch.cuda.get_device_name(0)} | {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
PY
echo "commit $commit" >> "$out/device.txt"
stages=${STAGES:-"tests cifar imagenet deit compiled detection"}
status=0

pack() {  # the logs, CSVs and plots as one file in $OUT, beside a summary of the exits
    [[ -n ${OUT:-} ]] || return 0
    tar -czf "$OUT/$name.tar.gz" -C "$(dirname "$out")" "$name"
    cat "$out/device.txt" "$out"/*.exit > "$OUT/summary.txt" 2>/dev/null
}
trap pack EXIT

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    [[ " $stages " == *" $name "* ]] || return 0
    echo "== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start))s" | tee -a "$out/$name.log" > "$out/$name.exit"
    cat "$out/$name.exit"
    [[ $rc -eq 0 ]] || status=1
}

# 1. AMP (bf16, fp16 + GradScaler), channels_last, nccl with one process, the GPU-resident CIFAR loader,
#    checkpoint/resume on the GPU, detection under AMP; the one-graph compile test for none, SE and DLA-L only
#    (every method's compile test would take the whole budget; the CPU suite checks every method's graph).
compile_test=tests/test_cuda.py::test_compiled_train_step_on_cuda_is_one_graph_and_equals_eager
deselect=$(python3 -c "from lai_bench.models import list_models
print(' '.join(f'--deselect=$compile_test[{m}]' for m in list_models() if m not in ('none', 'se', 'dla_l')))")
# shellcheck disable=SC2086
stage tests 90 python3 -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider $deselect
# 2. CIFAR-100 ResNet-164, batch 128, every method: fp32 and bf16 + channels_last, eager.
stage cifar 80 python3 -m lai_bench.bench --methods all --device cuda --depth 164 --batch 128 \
    --variants fp32,channels_last+bf16 --steps 10 --warmup 3 --rounds 1 --out "$out"
# 3. ImageNet ResNet-50, batch 64, bf16 + channels_last, every method.
stage imagenet 50 python3 -m lai_bench.bench --methods all --device cuda --backbone imagenet --depth 50 \
    --batch 64 --num-classes 1000 --variants channels_last+bf16 --steps 10 --warmup 3 --rounds 1 --out "$out"
# 4. DeiT-S at 224x224, batch 128, bf16, eager: the plain DeiT and the methods of the deit grid.
stage deit 35 python3 -m lai_bench.bench --methods none,mrla_light,mrla_base,dla_l,dla_b,dense --device cuda \
    --backbone deit_small --batch 128 --num-classes 1000 --variants bf16 --steps 8 --warmup 3 --rounds 1 --out "$out"
# 5. CIFAR ResNet-164, bf16 + channels_last, torch.compile (compile time in the compile_s column): plain ResNet,
#    SE, MRLA-light and DLA-L, the methods whose compile fits the budget beside the headline comparison.
stage compiled 85 python3 -m lai_bench.bench --methods none,se,mrla_light,dla_l --device cuda --depth 164 \
    --batch 128 --compile --variants channels_last+bf16+compile --steps 10 --warmup 3 --rounds 1 --out "$out"
# 6. COCO detectors at 800x1333, batch 2: Faster R-CNN R-50 FPN train step and inference per method, bf16.
stage detection 40 python3 -m lai_bench.bench --task detection --device cuda --task-opt detector=faster_rcnn \
    --methods none,se,mrla_light,dla_l --depth 50 --variants bf16 --steps 5 --warmup 2 --rounds 1 --out "$out"

echo "gpu-check: results in ${OUT:+$OUT/$name.tar.gz (from }$out${OUT:+)}"
exit $status
