#!/usr/bin/env bash
# The GPU check (issue 15, docs/gpu.md): one prepared run on a machine with an NVIDIA GPU and a CUDA torch
# wheel but none of our Debian packages. It
#   1. finds the Python with torch (PYTHON, else python3) and its LibTorch; says what GPU it sees;
#   2. unpacks the carried dependency bundle (.gpu_deps/bundle.tar.xz, made here by --bundle-deps) into a
#      folder outside / and points CMake and the loader at it;
#   3. builds Release against that torch (build-gpu/; the NCCL backend where nccl.h is found);
#   4. runs the CUDA tests (CUDA vs CPU within bf16 tolerance: ViT, VQ-KD step, MIM step; quantizer in fp32)
#      and the distributed tests;
#   5. benchmarks both train steps at base size in bf16 (beitv2), beside PyTorch eager with fp16 AMP (the
#      official setting) and bf16: img/s, MFU against the card's bf16 dense peak, peak GPU memory; then the
#      largest batch that fits (doubling until out of memory);
#   6. writes everything to $OUT/gpu_check.json (OUT defaults to ./gpu_check_out).
#
#   scripts/gpu_check.sh                   on the GPU machine (about 8 minutes on an H200)
#   scripts/gpu_check.sh --cpu-dry-run     here and in CI: every step on the CPU at tiny sizes, no bundle, the
#                                          existing build directory, the CUDA tests' plumbing (CPU vs CPU)
#   scripts/gpu_check.sh --bundle-deps     here: write .gpu_deps/bundle.tar.xz for the GPU machine
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
mode=gpu
case ${1:-} in
  --cpu-dry-run) mode=dry ;;
  --bundle-deps) mode=bundle ;;
  "") ;;
  *) echo "gpu_check.sh: unknown argument $1 (--cpu-dry-run | --bundle-deps)" >&2; exit 2 ;;
esac
OUT=${OUT:-$ROOT/gpu_check_out}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}   # H100/H200 SXM bf16 dense peak (the datasheet's 1979 is with sparsity)
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" >&2; }

# The Debian packages the build needs (their -dev files and every shared library our binaries load that the
# GPU machine's image may lack), as one compressed tarball under the 64 MiB a device call may carry.
if [ $mode = bundle ]; then
  source scripts/env.sh
  pkgs="libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev libyaml-cpp-dev libspdlog-dev libfmt-dev
        libgtest-dev nlohmann-json3-dev libcli11-dev zlib1g-dev"
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  for p in $pkgs; do
    dpkg -L "$p" | grep -v '/libopencv_.*\.a$' | while read -r f; do  # OpenCV's static archives: not linked
      if [ -f "$f" ] || [ -L "$f" ]; then mkdir -p "$stage$(dirname "$f")"; cp -a "$f" "$stage$f"; fi
    done
  done
  # Shared libraries the binaries load, but not the C runtime, which the target has in a newer version.
  "$BEITV2_CMAKE" --build "$BEITV2_BUILD_DIR" -j "${BEITV2_JOBS:-2}" --target beitv2-bench > /dev/null
  ldd "$BEITV2_BUILD_DIR/bin/beitv2-bench" | awk '$3 ~ /^\// {print $3}' |
    grep -Ev '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so|/torch/' |
    while read -r f; do  # the file under /usr/lib (/lib is a link to it), and its soname link beside it
      real=$(readlink -f "$f")
      link=$(dirname "$real")/$(basename "$f")
      mkdir -p "$stage$(dirname "$real")"
      cp -a "$real" "$stage$real"
      [ "$link" = "$real" ] || ln -sf "$(basename "$real")" "$stage$link"
    done
  mkdir -p .gpu_deps
  XZ_OPT=-9 tar -C "$stage" -cJf .gpu_deps/bundle.tar.xz .
  size=$(du -m .gpu_deps/bundle.tar.xz | cut -f1)
  log "wrote .gpu_deps/bundle.tar.xz (${size} MiB); carry .gpu_deps in the device call"
  [ "$size" -lt 60 ] || log "WARNING: over the 60 MiB that leaves room for the working tree in one call"
  exit 0
fi

mkdir -p "$OUT"
results=$OUT/gpu_check.json
steps=()
record() { steps+=("$1"); }  # one JSON object per step

# 1. Python, torch, GPU
if [ $mode = dry ]; then
  source scripts/env.sh
  PYTHON=${PYTHON:-$BEITV2_BUILD_PYTHON}
  BUILD=$BEITV2_BUILD_DIR
else
  PYTHON=${PYTHON:-python3}
  BUILD=$ROOT/build-gpu
fi
info=$("$PYTHON" -c 'import json, torch
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "available": torch.cuda.is_available(),
                  "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                  "prefix": torch.utils.cmake_prefix_path}))')
log "torch: $info"
record "{\"step\": \"environment\", \"info\": $info}"
prefix=$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')
if [ $mode = gpu ] && ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  log "no CUDA device visible to torch: run with --cpu-dry-run instead"; exit 1
fi

# 2. dependencies
if [ $mode = gpu ]; then
  if [ -f .gpu_deps/bundle.tar.xz ]; then
    deps=/tmp/beitv2_gpu_deps
    rm -rf "$deps" && mkdir -p "$deps" && tar -C "$deps" -xJf .gpu_deps/bundle.tar.xz
    export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:$deps/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
    export CPATH="$deps/usr/include:${CPATH:-}"
    cmake_deps="$deps/usr;$deps/usr/lib/x86_64-linux-gnu/cmake;$deps/usr/share/cmake"
    zlib=(-DZLIB_ROOT="$deps/usr")
    log "dependencies from the carried bundle in $deps"
  else
    cmake_deps="" zlib=()
    log "no .gpu_deps/bundle.tar.xz: using the system's packages"
  fi
  record "{\"step\": \"dependencies\", \"bundle\": $([ -f .gpu_deps/bundle.tar.xz ] && echo true || echo false)}"
else
  record '{"step": "dependencies", "bundle": false, "dry_run": true}'
fi

# 3. build
t0=$(date +%s)
if [ $mode = gpu ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBEITV2_PYTHON="$PYTHON" \
        -DCMAKE_PREFIX_PATH="$cmake_deps;$prefix" "${zlib[@]}" -DBEITV2_WERROR=OFF > "$OUT/configure.log" 2>&1 ||
    { tail -30 "$OUT/configure.log"; exit 1; }
  cmake --build "$BUILD" -j "$(nproc)" > "$OUT/build.log" 2>&1 || { grep -m5 -A5 error "$OUT/build.log"; exit 1; }
else
  "$BEITV2_CMAKE" --build "$BUILD" -j "${BEITV2_JOBS:-2}" > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
log "built in $(( $(date +%s) - t0 )) s"
record "{\"step\": \"build\", \"seconds\": $(( $(date +%s) - t0 )), \"nccl\": $(grep -q 'NCCL backend on' "$OUT/configure.log" 2>/dev/null && echo true || echo false)}"

# 4. tests
t0=$(date +%s)
if [ $mode = dry ]; then
  BEITV2_CUDA_DRY_RUN=1 "$BUILD/bin/beitv2_cuda_tests" > "$OUT/tests.log" 2>&1 || { tail -40 "$OUT/tests.log"; exit 1; }
else
  "$BUILD/bin/beitv2_cuda_tests" > "$OUT/tests.log" 2>&1 || { tail -40 "$OUT/tests.log"; exit 1; }
  "$BUILD/bin/beitv2_dist_tests" >> "$OUT/tests.log" 2>&1 || { tail -40 "$OUT/tests.log"; exit 1; }
fi
# NCCL: train-vqkd (tiny, CUDA) as 2 processes on the one GPU, then as 1 (world size 1 starts no group).
if [ $mode = gpu ]; then
  "$PYTHON" -c 'import sys, numpy as np; from PIL import Image
for i in range(32): Image.fromarray(np.random.RandomState(i).randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(f"{sys.argv[1]}/{i}.png")' \
    "$(mkdir -p "$OUT/nccl_images" && echo "$OUT/nccl_images")"
  nccl_cfg=(--config configs/vqkd_tiny_photos.yaml --set train.steps=20 --set train.device=cuda --set "data.val=\"\""
            --set data.train="$OUT/nccl_images" --set data.batch_size=8 --set train.log_every=5)
  if "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node 2 --no-python "$BUILD/bin/train-vqkd" \
       "${nccl_cfg[@]}" --dist-backend nccl --set train.out_dir="$OUT/nccl2" > "$OUT/nccl.log" 2>&1; then
    record '{"step": "nccl", "processes": 2, "ok": true}'; log "NCCL: 2 processes on one GPU ran"
  else
    record '{"step": "nccl", "processes": 2, "ok": false}'; log "NCCL: 2 processes on one GPU failed (see nccl.log)"
  fi
fi
passed=$(grep -c '^\[       OK \]' "$OUT/tests.log" || true)
skipped=$(grep -c '^\[  SKIPPED \]' "$OUT/tests.log" || true)
log "tests: $passed passed, $skipped skipped"
record "{\"step\": \"tests\", \"passed\": $passed, \"skipped\": $skipped, \"seconds\": $(( $(date +%s) - t0 ))}"

# 5. benchmarks
if [ $mode = dry ]; then
  dev=(--device cpu) size=tiny iters=2 amp_ours=none amps_ref="none" batches="8" threads=$(nproc)
else
  dev=(--device cuda) size=base iters=10 amp_ours=bf16 amps_ref="fp16 bf16" batches="64" threads=8
fi
bench() {  # bench <step> <batch>: beitv2 and PyTorch eager; one JSON line each appended to steps
  local step=$1 b=$2 line
  line=$("$BUILD/bin/beitv2-bench" "$step" --size $size --batch "$b" --threads $threads --iters $iters --warmup 2 \
         "${dev[@]}" --amp $amp_ours --peak-tflops "$PEAK_TFLOPS") || return 1
  record "$line"
  log "$line"
  for a in $amps_ref; do
    line=$("$PYTHON" tools/bench_reference.py "$step" --size $size --batch "$b" --threads $threads --iters $iters \
           --warmup 2 "${dev[@]}" --amp "$a") || return 1
    record "$line"
    log "$line"
  done
}
for step in vqkd-train-step mim-train-step; do
  for b in $batches; do bench "$step" "$b"; done
  # the largest batch that fits: double until the step fails (out of memory), on the GPU only
  if [ $mode = gpu ]; then
    b=128 fits=64
    while [ $b -le 4096 ] && "$BUILD/bin/beitv2-bench" "$step" --size $size --batch $b --iters 1 --warmup 1 \
          "${dev[@]}" --amp $amp_ours > "$OUT/fit_${step}_${b}.json" 2> /dev/null; do
      fits=$b; b=$((b * 2))
    done
    record "{\"step\": \"largest_batch\", \"bench\": \"$step\", \"batch\": $fits}"
    log "$step: largest batch that fits: $fits"
  fi
done

# 6. results
{
  echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"mode\": \"$mode\", \"peak_tflops\": $PEAK_TFLOPS, \"steps\": ["
  for i in "${!steps[@]}"; do echo "  ${steps[$i]}$([ "$i" -lt $(( ${#steps[@]} - 1 )) ] && echo ,)"; done
  echo "]}"
} > "$results"
"$PYTHON" -c 'import json, sys; json.load(open(sys.argv[1]))' "$results"  # well-formed
log "wrote $results"
