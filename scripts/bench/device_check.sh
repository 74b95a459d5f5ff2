#!/usr/bin/env bash
# What to run on a new GPU machine to see the project work there, in under 10 minutes on one GPU:
#   1. the project on the machine's own PyTorch (a CUDA build): the package and its Python
#      dependencies, from PyPI, or from wheels in .whl/ on a machine without network;
#   2. the library's tests with their CUDA cases (tests/library: the library on the GPU, the fused
#      recurrence, the sync-free step under torch.cuda.set_sync_debug_mode("error") and in a CUDA
#      graph, a captured step replayed against eager, compiled steps against eager, TF32) and
#      tests/training/test_devices.py (one short train.py run per task with trainer=gpu, mixed precision);
#   3. the four benchmarks with --device cuda: projUNN step / RMSprop step at n = 1024 ... 8192,
#      RNN training step / cuDNN nn.RNN step (copy and pMNIST sizes), orthogonal ResNet9 step /
#      standard ResNet9 step (and its forward+backward against the standard one's and against its
#      floor, the frequency matrices' products with cuFFT's or its own transforms, at batch 256),
#      and a step on tall matrices with orthonormal columns beside the peers that scale (geoopt's
#      QR retraction and POGO, when installed; reported absent otherwise).
# Every table is written to the folder given as argument, or $OUT, or ./device_check (NAME.md, with
# the plots beside them), and each command's whole output to NAME.log there.
#
#   bash scripts/bench/device_check.sh [OUT_DIR]
#
# Without network, put wheels of what the machine lacks in .whl/ first, e.g. for a machine with
# torch, pytorch-lightning, pandas and matplotlib but no Hydra:
#   pip download --no-deps -d .whl hydra-core==1.3.2 omegaconf==2.3.0 && pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:-${OUT:-device_check}}"
mkdir -p "$out"
python="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$python" -c "import hydra, omegaconf, pytorch_lightning, pytest" 2>/dev/null; then
    if [ -d .whl ]; then
        "$python" -m pip install -q --no-index --no-deps --target /tmp/device_check_site .whl/*.whl || exit 1
        export PYTHONPATH="$PYTHONPATH:/tmp/device_check_site"
    else
        "$python" -m pip install -q -e ".[train,test]" || exit 1
    fi
fi

{
    "$python" -c "import torch; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}')"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
} | tee "$out/device.txt"

run() {  # run NAME SECONDS COMMAND...: the command's output in $out/NAME, a line when it fails
    local name=$1 seconds=$2
    shift 2
    echo "== $name: $*"
    timeout "$seconds" "$@" 2>&1 | tee "$out/$name" || echo "!! $name failed or ran out of time (${seconds} s)"
}

run tests.txt 240 "$python" -m pytest -q -rs -p no:cacheprovider tests/library tests/training/test_devices.py
run bench_update.log 120 "$python" -m scripts.bench.update --device cuda --reps 20 --budget 4 --out "$out/bench_update.md"
run bench_rnn.log 120 "$python" -m scripts.bench.rnn --device cuda --reps 10 --out "$out/bench_rnn.md"
run bench_conv.log 90 "$python" -m scripts.bench.conv --device cuda --batch 256 --reps 5 --skip-deep \
    --out "$out/bench_conv.md"
run bench_conv_floor.log 60 "$python" -m scripts.bench.conv --device cuda --batch 256 --reps 20 --budget 5 \
    --floor --skip-resnet --skip-deep --out "$out/bench_conv_floor.md"
run bench_stiefel.log 60 "$python" -m scripts.bench.stiefel --device cuda --shapes 1024x64 4096x256 \
    --methods RMSprop "projUNN-T k=1" "projUNN-D k=1" "geoopt euclidean" POGO \
    --reps 10 --budget 1 --steps 100 --error-budget 3 --out "$out/bench_stiefel.md"
