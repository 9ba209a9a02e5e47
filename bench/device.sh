#!/usr/bin/env bash
# The benchmarks with --device cuda, in one call on a lent GPU machine (the `device` tool).
#
# That machine has its own Python (3.12) and torch, and cannot reach a package registry, so
# what spp needs beyond its image travels as wheels in .whl/ (spp's own wheel among them,
# installed without its torch pin), and the real T5 tokenizer and RTE in .gpu/ (both folders
# ignored by git, named in the call's `carry`). Prepare them here:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl \
#       litestar litestar-htmx multipart polyfactory faker rich-click sniffio msgspec uvicorn \
#       sqlalchemy alembic mako platformdirs transformers==<this machine's> peft==<this machine's>
#   pip wheel --no-deps --no-build-isolation -w .whl .
#   mkdir -p .gpu && cp -r /work/shared/data/t5-tokenizer /work/shared/data/rte .gpu/
#
# Then: run(command="bash bench/device.sh", carry=[".whl", ".gpu"], timeout_s=500).
# SPP_CUDNN_ATTENTION=1 in front keeps cuDNN's attention on (spp turns it off on a GPU): the A/B
# of that choice, which the first H200 run (2026-11-30) could not yet take.
# Each benchmark runs under its own time limit and a failing one does not stop the rest; the
# JSON results and one log come back under $OUT. SMOKE=1 runs tiny sizes (a check of this
# script on a CPU machine: DEVICE=cpu PY=.venv/bin/python SKIP_INSTALL=1 SMOKE=1).
set -u
OUT=${OUT:-/tmp/spp-device}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
TOK=.gpu/t5-tokenizer
RTE=.gpu/rte
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -z "${SKIP_INSTALL:-}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.used,memory.total --format=csv 2>/dev/null
"$PY" - <<'EOF' || { echo "spp does not import"; exit 1; }
import platform, torch, transformers, spp.serve.app, spp.prompts.backbone
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"python {platform.python_version()} torch {torch.__version__} transformers {transformers.__version__} {gpu}")
EOF
lscpu | grep -m1 "Model name"

ONLY=${ONLY:-core packed transfer serve}  # which benchmarks, e.g. ONLY="transfer serve" for a rerun
run() {  # run NAME SECONDS script args...: its log appended to $OUT/device.log, its tail printed
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    case " $ONLY " in *" $name "*) ;; *) return 0 ;; esac
    echo "=== $name: $*" >>"$OUT/device.log"
    timeout --signal=INT --kill-after=15 "$limit" "$PY" "$@" >>"$OUT/device.log" 2>&1
    rc=$?
    echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/device.log"
}

if [ -n "${SMOKE:-}" ]; then
    CORE="--repeats 1 --sections precision,scoring"; PACKED="--repeats 1"
    TRANSFER="--examples 16 --peft-examples 4 --tasks 2 --sources 2"
    SERVE="--duration 2 --warmup 1 --tasks 2 --clients 8 --bare-batch-sizes 8 --micro-sizes 8 --no-float32"
else
    CORE=""; PACKED=""; TRANSFER=""
    SERVE="--duration 16 --warmup 3 --bare-batch-sizes 8,32,64 --micro-sizes 16"
fi
run core 120 bench/core.py --device "$DEVICE" --tokenizer $TOK --rte $RTE $CORE --out "$OUT/core-$DEVICE.json"
run packed 70 bench/core.py --device "$DEVICE" --tokenizer $TOK --rte $RTE --sections packed $PACKED \
    --out "$OUT/core-packed-$DEVICE.json"
run transfer 90 bench/transfer.py --device "$DEVICE" --tokenizer $TOK --data-dir $RTE $TRANSFER \
    --out "$OUT/transfer-$DEVICE.json"
run serve 150 bench/serve.py --device "$DEVICE" --tokenizer $TOK --rte-dir $RTE $SERVE --out "$OUT/serve-$DEVICE.json"
grep -v "^\s*$" "$OUT/device.log" | tail -n 150
