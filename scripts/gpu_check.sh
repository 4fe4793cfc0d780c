#!/usr/bin/env bash
# One pass of the device checks on a CUDA machine: the device-aware tests with --device cuda, every
# configuration trained on the GPU through the CLI, the NoPeek experiment and the overhead benchmark.
# Usage: scripts/gpu_check.sh [OUT_DIR]   (run from the repository root; needs torch with CUDA)
# The tests and commands it runs are the project's own; it only sets PYTHONPATH to src/.
set -uo pipefail
out="${1:-gpu-check}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
status=0
step() { echo; echo "=== $*"; }
run() { "$@" || { echo "FAILED ($?): $*"; status=1; }; }

step "device"
run "$py" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"

step "device-aware tests on cuda"
run "$py" -m pytest -q -p no:cacheprovider --device cuda tests/privacy/test_dcor.py tests/split/test_recovery.py \
  tests/transport/grpc/test_equivalence.py tests/deploy/test_hostile.py tests/deploy/test_faults.py tests/cli/test_train.py

step "every configuration through the CLI on cuda"
for args in "--configuration vanilla --clients 4" "--configuration ushaped --clients 2 --relay server" \
            "--configuration vertical --dataset breast_cancer --model mlp --clients 3" \
            "--configuration multihop --model small_cnn --cut features.1,classifier.0" "--configuration multitask"; do
  run "$py" -m splitlearn.cli.app train $args --epochs 3 --device cuda --out "$out/runs"
done

step "NoPeek experiment on cuda"
start=$SECONDS
run "$py" -m splitlearn.cli.app experiment nopeek --device cuda --out "$out/nopeek" ${NOPEEK_ARGS:-}
echo "nopeek experiment: $((SECONDS - start)) s"

step "split vs centralised step time on cuda"
run "$py" benchmarks/overhead.py --device cuda

if [ -n "${FULL_SUITE:-}" ]; then
  step "the whole suite (device-aware tests on cuda), $FULL_SUITE"
  run "$py" -m pytest -q -p no:cacheprovider --device cuda $FULL_SUITE
fi

exit $status
