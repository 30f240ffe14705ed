#!/usr/bin/env bash
# Data-parallel training, one process per device, launched with msrun (MindSpore's launcher).
# Rank 0 writes checkpoints and metrics; every worker's log is in $LOG_DIR (default ./msrun_logs).
# MASTER_PORT (default 8118) picks the scheduler port. On a CPU host add --extra --device_target CPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
USAGE="run_distribute_train_gpu.sh CONFIG [--num_devices N] [--device_ids 0,1,2,3] [--checkpoint CKPT] [--extra ARGS...]"

take_data "$USAGE" "$@"
shift
NUM_DEVICES="" DEVICE_IDS=""
parse_options "$USAGE" "--num_devices=@NUM_DEVICES --device_ids=@DEVICE_IDS --checkpoint=--resume" "$@"
if [[ -n $DEVICE_IDS ]]; then
  IFS=, read -r -a IDS <<<"$DEVICE_IDS"
  NUM_DEVICES=${NUM_DEVICES:-${#IDS[@]}}
  ((${#IDS[@]} == NUM_DEVICES)) || die "--device_ids lists ${#IDS[@]} devices but --num_devices is $NUM_DEVICES"
  export CUDA_VISIBLE_DEVICES=$DEVICE_IDS  # msrun numbers the visible devices 0..N-1 per worker
fi
NUM_DEVICES=${NUM_DEVICES:-8}
[[ $NUM_DEVICES =~ ^[1-9][0-9]*$ ]] || die "--num_devices must be a positive integer, got $NUM_DEVICES"
PYTHON_DIR="$(dirname "$PYTHON")"
[[ $PYTHON_DIR == . ]] || export PATH="$PYTHON_DIR:$PATH"  # msrun starts workers with the `python` on PATH
command -v msrun >/dev/null || die "msrun not found (it comes with mindspore; activate its environment)"
LOG_DIR=${LOG_DIR:-./msrun_logs}
msrun --worker_num="$NUM_DEVICES" --local_worker_num="$NUM_DEVICES" --master_port="${MASTER_PORT:-8118}" \
  --log_dir="$LOG_DIR" --join=True \
  "$REPO_DIR/train.py" --config "$DATA" --device_num "$NUM_DEVICES" "${PY_ARGS[@]}" || {
  status=$?
  echo "$(basename "$0"): training failed (exit $status); last lines of $LOG_DIR/worker_0.log:" >&2
  tail -n 20 "$LOG_DIR/worker_0.log" >&2 || true
  exit "$status"
}
echo "logs: $LOG_DIR/worker_*.log"
