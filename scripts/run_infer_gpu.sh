#!/usr/bin/env bash
# Label an image or a folder of images with a checkpoint in MindSpore (infer.py).
# The device comes from the config (GPU in the shipped ones); on a CPU host add --extra --device_target CPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
USAGE="run_infer_gpu.sh DATA [--checkpoint CKPT] [--arch ARCH] [--output predictions.json] [--extra ARGS...]"

take_data "$USAGE" "$@"
shift
parse_options "$USAGE" "--checkpoint --arch --output" "$@"
exec "$PYTHON" "$REPO_DIR/infer.py" "$DATA" "${PY_ARGS[@]}"
