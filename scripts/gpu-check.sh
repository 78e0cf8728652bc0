#!/usr/bin/env bash
# The GPU check: on one CUDA GPU, the tests that need CUDA, then the benchmark of every method, CSVs and plots
# under analysis/bench/gpu-<date>-<commit>/. Meant to fit 8 minutes; each stage has its own time limit and writes
# what it measured before the next starts (a bench cut short leaves its rows in a -partial.csv).
#
#   bash scripts/gpu-check.sh            # everything
#   STAGES="tests cifar" bash scripts/gpu-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu-check: no CUDA device visible to torch; nothing to check" >&2
    exit 2
fi
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
out=${OUT_DIR:-analysis/bench/gpu-$(date -u +%Y%m%d)-${commit}}
mkdir -p "$out"
python -c "import torch; print('torch', torch.__version__, '| gpu', torch.cuda.get_device_name(0))" | tee "$out/device.txt"
echo "commit $commit" >> "$out/device.txt"
stages=${STAGES:-"tests cifar imagenet compiled detection"}
status=0

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    [[ " $stages " == *" $name "* ]] || return 0
    echo "== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout --signal=INT "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start))s" | tee -a "$out/$name.log"
    [[ $rc -eq 0 ]] || status=1
}

# 1. AMP (bf16, fp16 + GradScaler), channels_last, compile, nccl with one process, the GPU-resident CIFAR loader,
#    checkpoint/resume on the GPU.
stage tests 150 python -m pytest -q -m cuda tests/test_cuda.py
# 2. CIFAR-100 ResNet-164, batch 128, every method: fp32 and bf16 + channels_last, eager.
stage cifar 110 python -m lai_bench.bench --methods all --device cuda --depth 164 --batch 128 \
    --variants fp32,channels_last+bf16 --steps 10 --warmup 3 --rounds 1 --out "$out"
# 3. ImageNet ResNet-50, batch 64, bf16 + channels_last, every method.
stage imagenet 70 python -m lai_bench.bench --methods all --device cuda --backbone imagenet --depth 50 \
    --batch 64 --num-classes 1000 --variants channels_last+bf16 --steps 10 --warmup 3 --rounds 1 --out "$out"
# 4. CIFAR ResNet-164, bf16 + channels_last, torch.compile: compile time in the compile_s column.
stage compiled 150 python -m lai_bench.bench --methods all --device cuda --depth 164 --batch 128 --compile \
    --variants channels_last+bf16+compile --steps 10 --warmup 3 --rounds 1 --out "$out"

# 5. COCO detectors at 800x1333, batch 2: Faster R-CNN R-50 FPN train step and inference per method, bf16.
stage detection 120 python -m lai_bench.bench --task detection --device cuda --detector faster_rcnn \
    --methods none,se,eca,mrla_light,dla_l --depth 50 --variants bf16 --steps 5 --warmup 2 --rounds 1 --out "$out"

echo "gpu-check: results in $out"
exit $status
