#!/usr/bin/env bash
# Throughput tables on a GPU (about 3 minutes on one H100/H200): every config at its own
# settings in float32 and in bfloat16, and DCGAN at 64x64x3 (random data), batch 256.
#
#   benchmarks/gpu.sh OUT_DIR          # OUT_DIR/NAME.{json,md} per table; all in throughput.md
#   benchmarks/gpu.sh OUT_DIR --quick  # a smoke test of this script that runs on a CPU
#
# The PyTorch columns appear when torch sees a CUDA device (pip install -e '.[bench]' gives a
# CPU build on machines without CUDA wheels; then the tables have genjax alone).
set -euo pipefail

out=${1:?usage: benchmarks/gpu.sh OUT_DIR [--quick]}
quick=${2:-}
cd "$(dirname "$0")/.."
mkdir -p "$out"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # leave room for torch on the same GPU

configs=all big_batch=256 args=()
if [[ "$quick" == "--quick" ]]; then
  configs=gan_ring8,vae_mlp_mnist big_batch=8 args=(--quick)
elif [[ -n "$quick" ]]; then
  echo "unknown option $quick; usage: benchmarks/gpu.sh OUT_DIR [--quick]" >&2
  exit 2
fi
if python -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  args+=(--torch)
fi

table() {  # table NAME ARGS...: one throughput.py run -> OUT_DIR/NAME.{json,md}
  local name=$1
  shift
  echo "== $name" >&2
  timeout 240 python benchmarks/throughput.py "$@" "${args[@]}" \
    --json "$out/$name.json" --markdown "$out/$name.md" > /dev/null
}

table configs_float32 --config "$configs" --dtype float32
table configs_bfloat16 --config "$configs" --dtype bfloat16
table dcgan64_bfloat16 --config dcgan_mnist --data_shape 64,64,3 --batch "$big_batch" --dtype bfloat16
table dcgan64_float32 --config dcgan_mnist --data_shape 64,64,3 --batch "$big_batch" --dtype float32

for name in configs_float32 configs_bfloat16 dcgan64_bfloat16 dcgan64_float32; do
  printf '## %s\n\n' "$name"
  cat "$out/$name.md"
  echo
done > "$out/throughput.md"
cat "$out/throughput.md"
