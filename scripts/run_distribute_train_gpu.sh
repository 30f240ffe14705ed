#!/usr/bin/env bash
# Data-parallel training, one process per device, on one or several nodes, launched with msrun (MindSpore's
# launcher, the default) or OpenMPI's mpirun (--launcher mpirun, or when msrun is absent).
# Several nodes with msrun: run this script on every node with the same --num_nodes, --master_addr (node 0's
# address) and --master_port, and that node's --node_rank. With mpirun: run it once, --hostfile naming the nodes.
# Rank 0 writes checkpoints and metrics; each node's worker logs are in $LOG_DIR (default ./msrun_logs or
# ./mpirun_logs). One device in all runs train.py directly (no launcher, no communication library).
# On a CPU host add --extra --device_target CPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
USAGE="run_distribute_train_gpu.sh CONFIG [--num_devices N] [--device_ids 0,1,2,3] [--checkpoint CKPT] \
[--launcher msrun|mpirun] [--num_nodes M] [--node_rank R] [--master_addr ADDR] [--master_port PORT] \
[--hostfile FILE] [--dry_run] [--extra ARGS...]"

take_data "$USAGE" "$@"
shift
NUM_DEVICES="" DEVICE_IDS="" LAUNCHER="" NUM_NODES=1 NODE_RANK="" OPT_MASTER_ADDR="" OPT_MASTER_PORT=""
HOSTFILE="" DRY_RUN=""
parse_options "$USAGE" "--num_devices=@NUM_DEVICES --device_ids=@DEVICE_IDS --checkpoint=--resume \
--launcher=@LAUNCHER --num_nodes=@NUM_NODES --node_rank=@NODE_RANK --master_addr=@OPT_MASTER_ADDR \
--master_port=@OPT_MASTER_PORT --hostfile=@HOSTFILE --dry_run=!DRY_RUN" "$@"
if [[ -n $DEVICE_IDS ]]; then
  IFS=, read -r -a IDS <<<"$DEVICE_IDS"
  NUM_DEVICES=${NUM_DEVICES:-${#IDS[@]}}
  ((${#IDS[@]} == NUM_DEVICES)) || die "--device_ids lists ${#IDS[@]} devices but --num_devices is $NUM_DEVICES"
  export CUDA_VISIBLE_DEVICES=$DEVICE_IDS  # the launchers number the visible devices 0..N-1 per node
fi
NUM_DEVICES=${NUM_DEVICES:-8}
[[ $NUM_DEVICES =~ ^[1-9][0-9]*$ ]] || die "--num_devices must be a positive integer, got $NUM_DEVICES"
[[ $NUM_NODES =~ ^[1-9][0-9]*$ ]] || die "--num_nodes must be a positive integer, got $NUM_NODES"
WORLD=$((NUM_DEVICES * NUM_NODES))
TRAIN=("$REPO_DIR/train.py" --config "$DATA" --device_num "$WORLD" "${PY_ARGS[@]}")

PYTHON_DIR="$(dirname "$PYTHON")"
[[ $PYTHON_DIR == . ]] || export PATH="$PYTHON_DIR:$PATH"  # msrun starts workers with the `python` on PATH
if [[ -z $LAUNCHER ]]; then
  LAUNCHER=$(command -v msrun >/dev/null && echo msrun || { command -v mpirun >/dev/null && echo mpirun; } || true)
  [[ -n $LAUNCHER ]] || ((WORLD == 1)) ||
    die "neither msrun (it comes with mindspore 2.3+) nor mpirun (OpenMPI) found"
fi
case $LAUNCHER in
  msrun | mpirun)
    ((WORLD == 1)) || command -v "$LAUNCHER" >/dev/null || die "--launcher $LAUNCHER: $LAUNCHER not found"
    ;;
  "") ;;
  *) die "--launcher must be msrun or mpirun, got $LAUNCHER" ;;
esac

if [[ $LAUNCHER == mpirun ]]; then
  [[ -z $NODE_RANK && -z $OPT_MASTER_ADDR && -z $OPT_MASTER_PORT ]] ||
    die "--node_rank/--master_addr/--master_port are msrun's: mpirun starts every node from one command (--hostfile)"
  ((NUM_NODES == 1)) || [[ -n $HOSTFILE ]] || die "--num_nodes $NUM_NODES with mpirun needs --hostfile"
  LOG_DIR=${LOG_DIR:-./mpirun_logs}
  FIRST_LOG="$LOG_DIR/1/rank.0/stdout"
  CMD=(mpirun -n "$WORLD" --map-by "ppr:$NUM_DEVICES:node" --output-filename "$LOG_DIR" --merge-stderr-to-stdout)
  [[ -z $HOSTFILE ]] || CMD+=(--hostfile "$HOSTFILE")
  ((EUID != 0)) || CMD+=(--allow-run-as-root)  # OpenMPI refuses root otherwise (usual in containers)
  for var in PATH LD_LIBRARY_PATH CUDA_VISIBLE_DEVICES GLOG_v; do  # remote nodes get only what -x exports
    [[ -z ${!var:-} ]] || CMD+=(-x "$var")
  done
  CMD+=("$PYTHON" "${TRAIN[@]}")
else
  [[ -z $HOSTFILE ]] || die "--hostfile is mpirun's: with msrun run this script on every node with --node_rank"
  MASTER_ADDR=${OPT_MASTER_ADDR:-${MASTER_ADDR:-}}
  MASTER_PORT=${OPT_MASTER_PORT:-${MASTER_PORT:-8118}}
  if ((NUM_NODES > 1)); then
    [[ -n $MASTER_ADDR && -n $NODE_RANK ]] ||
      die "--num_nodes $NUM_NODES needs --master_addr (node 0's address) and this node's --node_rank"
    [[ $NODE_RANK =~ ^[0-9]+$ ]] && ((NODE_RANK < NUM_NODES)) ||
      die "--node_rank must be in 0..$((NUM_NODES - 1)), got $NODE_RANK"
  else
    [[ -z $NODE_RANK || $NODE_RANK == 0 ]] || die "--node_rank $NODE_RANK needs --num_nodes above it"
  fi
  LOG_DIR=${LOG_DIR:-./msrun_logs}
  FIRST_LOG="$LOG_DIR/worker_$((${NODE_RANK:-0} * NUM_DEVICES)).log"
  CMD=(msrun --worker_num="$WORLD" --local_worker_num="$NUM_DEVICES" --master_addr="${MASTER_ADDR:-127.0.0.1}"
    --master_port="$MASTER_PORT" --log_dir="$LOG_DIR" --join=True)
  ((NUM_NODES == 1)) || CMD+=(--node_rank="$NODE_RANK")
  CMD+=("${TRAIN[@]}")
fi
((WORLD > 1)) || CMD=("$PYTHON" "${TRAIN[@]}")  # data parallelism over one device is plain training

if [[ -n $DRY_RUN ]]; then
  printf '%q ' "${CMD[@]}"
  echo
  exit 0
fi
((WORLD > 1)) || exec "${CMD[@]}"
"${CMD[@]}" || {
  status=$?
  echo "$(basename "$0"): training failed (exit $status); last lines of $FIRST_LOG:" >&2
  tail -n 20 "$FIRST_LOG" >&2 || true
  exit "$status"
}
echo "logs: $LOG_DIR"
