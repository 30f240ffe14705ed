#!/usr/bin/env bash
# Train on one device (train.py). The device comes from the config; on a CPU host add --extra --device_target CPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
USAGE="run_standalone_train_gpu.sh CONFIG [--device ID] [--checkpoint CKPT] [--extra ARGS...]"

take_data "$USAGE" "$@"
shift
parse_options "$USAGE" "--device=--device_id --checkpoint=--resume" "$@"
exec "$PYTHON" "$REPO_DIR/train.py" --config "$DATA" --device_num 1 "${PY_ARGS[@]}"
