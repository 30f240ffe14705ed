#!/usr/bin/env bash
# Train on one device (train.py). The device comes from the config; on a CPU host add --extra --device_target CPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
USAGE="run_standalone_train_gpu.sh CONFIG [--device ID] [--checkpoint CKPT] [--extra ARGS...]"

take_data "$USAGE" "$@"
shift
DEVICE=""
parse_options "$USAGE" "--device=@DEVICE --checkpoint=--resume" "$@"
[[ -z $DEVICE ]] || PY_ARGS=(--device_id "$DEVICE" "${PY_ARGS[@]}")
preflight "$DATA" 1 "$DEVICE" "${PY_ARGS[@]}"
# exec: train.py gets SIGTERM/SIGINT itself and stops with a checkpoint
exec "$PYTHON" "$REPO_DIR/train.py" --config "$DATA" --device_num 1 "${PY_ARGS[@]}"
