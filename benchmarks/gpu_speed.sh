#!/usr/bin/env bash
# Issue #13's figures on one GPU, in one go (about 9 minutes on an H100/H200; each part has its own time limit,
# so a part that fails or runs long does not lose the others):
#   1. training-step MFU of the XL/2 expert beside the reference DiT-XL/2, bf16, batch 32 eager, and batch 128
#      with both models compiled and where each step's GPU time goes (benchmarks/train_throughput.py: share of
#      the measured matmul rate and of the bf16 peak);
#   2. sampling latency per routing rule, K=8 XL/2 experts, 32x32x4 latents, guided Euler steps, batch 1 and 8:
#      bf16 and bf16+compile over 50 steps; fp32 over 10 (its cost per step is the same at every step);
#   3. the B/2 router's share of a guided top-1 step next to XL/2 experts (benchmarks/sampling_cost.py).
# Every figure is also written to OUT_DIR (default: $OUT, else gpu_speed/).
#
#     bash benchmarks/gpu_speed.sh [OUT_DIR]          # PYTHON=... to choose the interpreter; SECONDS_LEFT=540
#     DEVICE=cpu PRESET=tiny STEPS=2 FP32_STEPS=2 COMPILE_BATCH=8 bash benchmarks/gpu_speed.sh /tmp/x   # a dry run
out=${1:-${OUT:-gpu_speed}}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
deadline=$((SECONDS + ${SECONDS_LEFT:-540}))

part() {  # part NAME MAX_SECONDS COMMAND...: run it for at most MAX_SECONDS, or what is left before the deadline
  local name=$1 limit=$2 left=$((deadline - SECONDS))
  shift 2
  ((left < limit)) && limit=$left
  ((limit < 10)) && { echo "skipped $name: out of time" | tee "$out/$name.txt"; return; }
  echo "+ $*"
  timeout "$limit" "$@" 2>&1 | grep --line-buffered -v -e "UserWarning: Using \`torch.compile(module)\` when there are global hooks" \
    -e "return F.mse_loss" -e "loss = F.mse_loss" | tee "$out/$name.txt"
  echo "$name: exit ${PIPESTATUS[0]} after $SECONDS s"
}

device=${DEVICE:-cuda} preset=${PRESET:-XL/2} steps=${STEPS:-50} fp32_steps=${FP32_STEPS:-10}
nvidia-smi | tee "$out/nvidia-smi.txt"
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
mixture="--device $device --preset $preset --experts 8 --batches 1,8 --text-tokens 77"
part train 100 "$python" benchmarks/train_throughput.py --presets "$preset" --device "$device" --batch 32 --steps 5
part router_share 60 "$python" benchmarks/sampling_cost.py $mixture --figures router-share --precisions fp32,bf16 \
  --router-sizes "$preset" --router-batches 1,8 --repeats 10
part sampling_bf16 90 "$python" benchmarks/sampling_cost.py $mixture --figures latency --precisions bf16 --steps "$steps"
part sampling_fp32 60 "$python" benchmarks/sampling_cost.py $mixture --figures latency --precisions fp32 --steps "$fp32_steps"
part sampling_bf16_compile 150 "$python" benchmarks/sampling_cost.py $mixture --figures latency --precisions bf16+compile --steps "$steps"
part train_compile 240 "$python" benchmarks/train_throughput.py --presets "$preset" --device "$device" \
  --batch "${COMPILE_BATCH:-128}" --steps 4 --compile both --profile 2
