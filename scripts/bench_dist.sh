#!/usr/bin/env bash
# Multi-process scaling on this machine (docs/distributed.md): a trainer run as 1 process and as N processes
# (Gloo on localhost, torchrun's variables set by hand), 1 intra-op thread each, the same per-process batch,
# on the tiny Fashion-MNIST configs (prepared once into data/fashion_mnist, as scripts/demo.sh does).
# Prints images/s (global) and the share of step time blocked in collectives, read from rank 0's
# metrics.jsonl (the mean over the logged windows after the first).
#   scripts/bench_dist.sh [vqkd|pretrain] [--procs 2] [--steps 100] [--batch 32]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$BEITV2_ROOT"
which=vqkd
if [ $# -gt 0 ] && [[ $1 != --* ]]; then which=$1; shift; fi
procs=2 steps=100 batch=32
while [ $# -gt 0 ]; do
  case $1 in
    --procs) procs=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    *) echo "bench_dist.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
"$BEITV2_CMAKE" --build "$BEITV2_BUILD_DIR" -j "${BEITV2_JOBS:-2}" --target train-vqkd pretrain-beitv2 > /dev/null
[ -d data/fashion_mnist/val/9_Ankle_boot ] || python3 tools/prepare_fashion_mnist.py data/fashion_mnist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin=$BEITV2_BUILD_DIR/bin
common=(--set train.steps="$steps" --set train.threads=1 --set train.log_every=10 --set train.save_every=100000
        --set train.eval_every=100000 --set data.batch_size="$batch" --set data.workers=1 --set "data.val=\"\"")
if [ "$which" = vqkd ]; then
  tool=train-vqkd; config=configs/vqkd_tiny_fashion_mnist.yaml
else
  # pretraining needs a tokenizer: a short one, trained once here
  "$bin/train-vqkd" --config configs/vqkd_tiny_fashion_mnist.yaml --set train.steps=20 --set "data.val=\"\"" \
      --set train.out_dir="$tmp/tok" > /dev/null 2>&1
  tool=pretrain-beitv2; config=configs/beitv2_tiny_fashion_mnist.yaml
  common+=(--set tokenizer.path="$tmp/tok/tokenizer.safetensors")
fi
export OMP_WAIT_POLICY=PASSIVE  # 2 processes on 2 cores: no spinning threads stealing the other's core
run() {  # run <procs> <out_dir>
  local n=$1 out=$2 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local pids=()
  for ((r = 0; r < n; r++)); do
    if [ "$n" -gt 1 ]; then
      RANK=$r LOCAL_RANK=$r WORLD_SIZE=$n MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
        "$bin/$tool" --config "$config" "${common[@]}" --set train.out_dir="$out" > /dev/null 2> "$out.err$r" &
    else
      "$bin/$tool" --config "$config" "${common[@]}" --set train.out_dir="$out" > /dev/null 2> "$out.err$r" &
    fi
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { cat "$out".err*; exit 1; }; done
}
run 1 "$tmp/one"
run "$procs" "$tmp/many"
python3 - "$tmp/one/metrics.jsonl" "$tmp/many/metrics.jsonl" "$tool" "$procs" "$batch" <<'PY'
import json, sys
def windows(path):
    rows = [json.loads(l) for l in open(path) if '"images_per_s"' in l]
    return rows[1:] or rows  # the first window is the first step alone (start-up)
one, many = windows(sys.argv[1]), windows(sys.argv[2])
tool, procs, batch = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
ips1 = sum(r["images_per_s"] for r in one) / len(one)
ipsn = sum(r["images_per_s"] for r in many) / len(many)
comm = sum(r.get("comm_share", 0) for r in many) / len(many)
print(f"{tool}, tiny config, batch {batch} per process, 1 thread per process")
print(f"  1 process : {ips1:8.1f} img/s")
print(f"  {procs} processes: {ipsn:8.1f} img/s ({ipsn / ips1:.2f}x), {100 * comm:.0f}% of step time in collectives")
PY
