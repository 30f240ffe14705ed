#!/usr/bin/env bash
# Evaluate a checkpoint on data_url/val_dir (eval.py). On a CPU host add --extra --device_target CPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
# Without CONFIG, a checkpoint written by train.py gives the model's settings (the data: --extra --data_url DIR).
USAGE="run_eval_gpu.sh [CONFIG] [--device ID] [--checkpoint CKPT] [--extra ARGS...]"

CONFIG_ARGS=()
if (($#)) && [[ $1 != -* ]]; then
  CONFIG_ARGS=(--config "$1")
  shift
fi
parse_options "$USAGE" "--device=--device_id --checkpoint=--pretrained" "$@"
exec "$PYTHON" "$REPO_DIR/eval.py" "${CONFIG_ARGS[@]}" "${PY_ARGS[@]}"
