#!/usr/bin/env bash
# The accelerator suite: one command, a few minutes, results named by device.
#
#   bash benchmarks/gpu_suite.sh [OUT_DIR]      (default benchmarks/results/gpu)
#
# Runs, on whatever accelerator JAX finds (it refuses to run on a CPU-only
# machine unless LINVAE_SUITE_ALLOW_CPU=1, so a CPU result is never filed as a
# GPU one):
#   1. grid throughput, engine vs a sequential loop, G = 1 ... 10^4;
#   2. the time to a verified answer (Thm 2, MNIST, 50 beta, d1 = 64), float32
#      training re-verified in float64 (needs LINVAE_MNIST; skipped without);
#   3. FLOP/s of a grid step against the measured matmul peak;
#   4. the nonlinear grid benchmark (engine vs sequential vs PyTorch, --small).
# Each step writes <name>_<device>.{json,md} under OUT_DIR; a failing step is
# reported and the suite goes on, exiting non-zero at the end.
set -u
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/results/gpu}"
mkdir -p "$OUT"
python - <<'PY' || { [ "${LINVAE_SUITE_ALLOW_CPU:-0}" = 1 ] || exit 3; }
import jax, sys
d = jax.devices()[0]
print(f"device: {d.platform} {getattr(d, 'device_kind', '')} x{len(jax.devices())}")
sys.exit(0 if d.platform != "cpu" else 1)
PY
status=0
step() {
  echo "== $1"; shift
  if ! timeout 900 "$@"; then echo "!! step failed: $*"; status=1; fi
}
step "grid throughput" python benchmarks/grid_throughput.py --sizes 1 16 256 1024 4096 10000 \
  --steps 200 --cases small mnist_cvae --sizes-mnist 1 16 256 --out "$OUT"
if [ -n "${LINVAE_MNIST:-}" ]; then
  step "time to a verified answer" python benchmarks/time_to_answer.py --dtype float32 --out "$OUT"
else
  echo "== time to a verified answer: skipped (set LINVAE_MNIST, see README)"
fi
step "FLOP/s" python benchmarks/flops.py --out "$OUT"
step "nonlinear grid" python benchmarks/nonlinear_grid.py --small --out "$OUT"
exit $status
