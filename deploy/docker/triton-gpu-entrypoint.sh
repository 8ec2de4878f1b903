#!/usr/bin/env bash
# Entrypoint of Dockerfile.gpu: make the model repository's TensorRT engines exist for *this* GPU, then become
# tritonserver. Engines are specific to a GPU model and a TensorRT version, so they are built here, on the target,
# by the build_engines.sh that `sarm export --target gpu` wrote, and not at image build time.
#
#   SARM_MODEL_SOURCE      repository baked into the image (read-only)          default /opt/sarm/model_repo
#   SARM_MODEL_REPOSITORY  repository tritonserver serves (writable; mount a
#                          volume here to keep engines across restarts)         default /models
#   TRTEXEC                trtexec to build with                                 default /opt/sarm/trt/bin/trtexec
#   SARM_TRT_LIBS          libraries trtexec needs beyond the Triton image's     default /opt/sarm/trt/lib
# Arguments are passed on to tritonserver after --model-repository.
set -euo pipefail

src=${SARM_MODEL_SOURCE:-/opt/sarm/model_repo}
repo=${SARM_MODEL_REPOSITORY:-/models}
export TRTEXEC=${TRTEXEC:-/opt/sarm/trt/bin/trtexec}
trt_libs=${SARM_TRT_LIBS:-/opt/sarm/trt/lib}
stamp="$repo/.engines-built-for"

log() { echo "sarm-triton: $*" >&2; }

[[ -f "$src/sarm_manifest.json" && -x "$src/build_engines.sh" ]] \
    || { log "$src is not a GPU model repository from 'sarm export --target gpu'"; exit 2; }
mkdir -p "$repo"

# A kept volume may hold another model's repository (a new image): replace it whole, engines included.
if ! cmp -s "$src/sarm_manifest.json" "$repo/sarm_manifest.json"; then
    log "copying model repository $src -> $repo"
    find "$repo" -mindepth 1 -delete
    cp -R "$src/." "$repo/"
fi

gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sort -u | paste -sd '+' -) || gpus=""
[[ -n "$gpus" ]] || { log "no GPU visible (nvidia-smi found none): the TensorRT engines cannot be built"; exit 3; }
# What the engines were built for; a different GPU model or TensorRT (another base image) means rebuild.
want="gpu=$gpus release=${SARM_IMAGE_RELEASE:-unknown} tensorrt=${TRT_VERSION:-unknown} manifest=$(sha256sum "$repo/sarm_manifest.json" | cut -c1-16)"

missing=0
for onnx in "$repo"/*/model.onnx; do
    [[ -s "$(dirname "$onnx")/1/model.plan" ]] || missing=1
done
if [[ $missing == 1 || "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
    log "building TensorRT engines for $want (takes minutes)"
    # No stamp until every engine is built: a build cut short is redone at the next start.
    rm -f "$stamp" "$repo"/*/1/model.plan
    LD_LIBRARY_PATH="$trt_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$repo/build_engines.sh"
    for onnx in "$repo"/*/model.onnx; do
        [[ -s "$(dirname "$onnx")/1/model.plan" ]] || { log "build_engines.sh did not write $(dirname "$onnx")/1/model.plan"; exit 4; }
    done
    echo "$want" > "$stamp"
else
    log "engines up to date ($want)"
fi

exec tritonserver --model-repository="$repo" "$@"
