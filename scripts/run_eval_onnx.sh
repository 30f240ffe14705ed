#!/usr/bin/env bash
# Top-1 / top-5 accuracy of an exported ONNX model on an ImageFolder dataset (eval_onnx.py).
# ONNX_PATH defaults to ./conformer_tiny_patch16.onnx (export.py's default name for the default arch).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
USAGE="run_eval_onnx.sh DATA [--onnx_path PATH] [--extra ARGS...]"

take_data "$USAGE" "$@"
shift
parse_options "$USAGE" "--onnx_path" "$@"
exec "$PYTHON" "$REPO_DIR/eval_onnx.py" "$DATA" --onnx_path conformer_tiny_patch16.onnx "${PY_ARGS[@]}"
