#!/usr/bin/env bash
# Issue 31's GPU lines in one device call (about nine minutes on one H100/H200), each piece under its own time limit
# so that a slow one cannot take the others' figures with it:
#   1. step_speed.py: the published step (ResNet-50 + 8192-8192-8192, batch 256, bf16, synthetic on-device batches)
#      with each switch, peak memory and MFU, against solo-learn's VICReg under Lightning in the same process;
#   2. end_to_end.py: `mmvicreg train` over real JPEGs, 16 workers, every switch off against every switch on
#      (channels-last, compile without deterministic algorithms, TF32, colour ops on the device), the JPEGs decoded
#      on the device (e2e_on) or in the workers (e2e_on_cpu_decode);
#   3. decode_on_device.py: decode on the device against 4 and 16 CPU workers.
# Needs, in the repository root: .whl (wheels of the packages the machine lacks: faiss-cpu, open_clip_torch, ftfy,
# wcwidth), .solo (benchmarks/solo_learn_env.sh's folder) and a folder of JPEGs (IMAGES, default .gpu/coco).
#   OUT=/tmp/issue31 IMAGES=.gpu/coco benchmarks/issue31_gpu.sh
# PIECES names the pieces to run (default all: step e2e_off e2e_on e2e_on_cpu_decode decode).
# STEP_ARGS, E2E_ARGS and DECODE_ARGS are appended to each script's arguments (a CPU dry run passes small sizes).
set -u
out=${OUT:-/tmp/issue31}
images=${IMAGES:-.gpu/coco}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=$PWD:/tmp/site
else
    export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$out/gpu.txt"

piece() {  # piece NAME SECONDS COMMAND...: its output to $out/NAME.log, its tail here
    local name=$1 limit=$2
    shift 2
    case " ${PIECES:-step e2e_off e2e_on e2e_on_cpu_decode decode} " in *" $name "*) ;; *) return ;; esac
    echo "== $name from $(date +%T), limit ${limit}s"
    timeout -k 10 "$limit" "$@" >"$out/$name.log" 2>&1
    echo "== $name: exit $? at $(date +%T)"
    grep -v -E "Warning|warn\(|@register_model|custom_fwd|custom_bwd" "$out/$name.log" | tail -n 30
}
e2e=(python3 benchmarks/end_to_end.py --images "$images" --batch 256 --workers 16 --steps 25 --no-write)
# shellcheck disable=SC2086  # the *_ARGS are word lists
{
piece step 290 env PYTHONPATH="$PYTHONPATH:$PWD/.solo" python3 benchmarks/step_speed.py --solo-learn --steps 20 \
    --warmup 5 --section "The published step on a GPU: each speed switch and solo-learn (step_speed.py)" ${STEP_ARGS:-}
piece e2e_off 60 "${e2e[@]}" --modes workers --label "every switch off" --extra train.channels_last=false \
    --extra train.compile=false --extra train.tf32=false ${E2E_ARGS:-}
piece e2e_on 140 "${e2e[@]}" --modes device --label "every switch on" --extra train.channels_last=true \
    --extra train.compile=true --extra train.tf32=true --extra train.deterministic=false --extra data.decode_on=device ${E2E_ARGS:-}
piece e2e_on_cpu_decode 140 "${e2e[@]}" --modes device --label "every switch on, decode in the workers" \
    --extra train.channels_last=true --extra train.compile=true --extra train.tf32=true \
    --extra train.deterministic=false --extra data.decode_on=workers ${E2E_ARGS:-}
piece decode 150 python3 benchmarks/decode_on_device.py --images "$images" --workers 4 16 --batch 128 --epochs 1 \
    --write ${DECODE_ARGS:-}
} 2>&1 | tee "$out/summary.log"
cp benchmarks/RESULTS.md "$out/RESULTS.md"
