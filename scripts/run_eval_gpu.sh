#!/usr/bin/env bash
# Evaluate a checkpoint on data_url/val_dir (eval.py). On a CPU host add --extra --device_target CPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
USAGE="run_eval_gpu.sh CONFIG [--device ID] [--checkpoint CKPT] [--extra ARGS...]"

take_data "$USAGE" "$@"  # the first argument: here the config file
CONFIG=$DATA
shift
PY_ARGS=()
while (($#)); do
  case $1 in
    --device) (($# >= 2)) || die "--device needs a value"; PY_ARGS+=(--device_id "$2"); shift 2 ;;
    --checkpoint) (($# >= 2)) || die "--checkpoint needs a value"; PY_ARGS+=(--pretrained "$2"); shift 2 ;;
    --extra) shift; PY_ARGS+=("$@"); break ;;
    -h | --help) echo "usage: $USAGE"; exit 0 ;;
    *) die "unknown argument $1 (usage: $USAGE)" ;;
  esac
done
exec "$PYTHON" "$REPO_DIR/eval.py" --config "$CONFIG" "${PY_ARGS[@]}"
