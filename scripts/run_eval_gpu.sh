#!/usr/bin/env bash
# Evaluate a checkpoint on data_url/val_dir (eval.py). On a CPU host add --extra --device_target CPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
USAGE="run_eval_gpu.sh CONFIG [--device ID] [--checkpoint CKPT] [--extra ARGS...]"

take_data "$USAGE" "$@"
shift
parse_options "$USAGE" "--device=--device_id --checkpoint=--pretrained" "$@"
exec "$PYTHON" "$REPO_DIR/eval.py" --config "$DATA" "${PY_ARGS[@]}"
