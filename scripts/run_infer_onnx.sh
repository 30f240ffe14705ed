#!/usr/bin/env bash
# Label an image or a folder of images with an exported ONNX model in onnxruntime (infer_onnx.py).
# ONNX_PATH defaults to ./conformer_tiny_patch16.onnx (export.py's default name for the default arch).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
USAGE="run_infer_onnx.sh DATA [--onnx_path PATH] [--output predictions.json] [--extra ARGS...]"

take_data "$USAGE" "$@"
shift
parse_options "$USAGE" "--onnx_path --output" "$@"
exec "$PYTHON" "$REPO_DIR/infer_onnx.py" "$DATA" --onnx_path conformer_tiny_patch16.onnx "${PY_ARGS[@]}"
