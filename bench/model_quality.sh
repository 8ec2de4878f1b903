#!/usr/bin/env bash
# Reproduces the model-quality figures: for each development task, generate training and held-out demos
# (default quality mix), embed them, train SARM (stage labels) and the frame-index baseline with the same
# seed and steps, and evaluate both on the held-out demos. Results: runs/quality/<task>/report/.
# Usage: bench/model_quality.sh [TASK ...]   (env: EPISODES=100 HELDOUT=40 STEPS=2000 IMAGE=128)
set -euo pipefail
cd "$(dirname "$0")/.."
SARM=.venv/bin/sarm
EPISODES=${EPISODES:-100} HELDOUT=${HELDOUT:-40} STEPS=${STEPS:-2000} IMAGE=${IMAGE:-128}
TASKS=("${@:-pick-place-v3 assembly-v3 peg-insert-side-v3}")
read -r -a TASKS <<< "${TASKS[*]}"
for task in "${TASKS[@]}"; do
  run=runs/quality/$task
  mkdir -p "$run"
  for split in train:"$EPISODES":0 heldout:"$HELDOUT":1000; do
    IFS=: read -r name count seed <<< "$split"
    if [ ! -f "$run/$name/meta/info.json" ]; then
      start=$SECONDS
      "$SARM" data generate --task "$task" --episodes "$count" --out "$run/$name" --image-size "$IMAGE" --seed "$seed"
      echo "generate $task $name: $((SECONDS - start)) s"
    fi
    "$SARM" data validate "$run/$name"
    start=$SECONDS
    "$SARM" embed "$run/$name"
    echo "embed $task $name: $((SECONDS - start)) s"
  done
  for labels in stage frame-index; do
    [ -f "$run/$labels/model.safetensors" ] && continue
    "$SARM" train "$run/train" --out "$run/$labels" --labels "$labels" --steps "$STEPS" --seed 0
  done
  "$SARM" eval "$run/stage" "$run/frame-index" --data "$run/heldout" --out "$run/report"
done
