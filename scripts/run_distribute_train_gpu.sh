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

ORIG_ARGS=("$@")
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

if [[ -n $DRY_RUN ]]; then  # the command only: no device checks, so it can be inspected anywhere
  printf '%q ' "${CMD[@]}"
  echo
  exit 0
fi
preflight "$DATA" "$NUM_DEVICES" "$DEVICE_IDS" "${PY_ARGS[@]}"
((WORLD > 1)) || exec "${CMD[@]}"

# This node's worker logs, in rank order.
worker_logs() {
  local r first=$((${NODE_RANK:-0} * NUM_DEVICES))
  for ((r = first; r < first + NUM_DEVICES; r++)); do
    if [[ $LAUNCHER == mpirun ]]; then echo "$LOG_DIR/1/rank.$r/stdout"; else echo "$LOG_DIR/worker_$r.log"; fi
  done
}

# This script's command line continuing from checkpoint $1 (its --checkpoint, if any, replaced).
resume_command() {
  local out=(bash "$0") a skip="" placed=""
  for a in "${ORIG_ARGS[@]}"; do
    if [[ -n $skip ]]; then skip="" && continue; fi
    if [[ -z $placed && $a == --checkpoint ]]; then skip=1 && continue; fi
    if [[ -z $placed && $a == --extra ]]; then out+=(--checkpoint "$1") && placed=1; fi
    out+=("$a")
  done
  [[ -n $placed ]] || out+=(--checkpoint "$1")
  printf '%q ' "${out[@]}"
}

# msrun's processes of role $1 (MS_WORKER, MS_SCHED) running train.py: not its `tail -f`s.
msrun_children() {
  local pid
  for pid in $(pgrep -P "$LAUNCH_PID" || true); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "MS_ROLE=$1" &&
      grep -q train.py "/proc/$pid/cmdline" 2>/dev/null; then
      echo "$pid"
    fi
  done
}

# msrun SIGKILLs its workers on SIGINT and dies of SIGTERM leaving them running; mpirun SIGKILLs its ranks
# a few seconds after forwarding SIGTERM. So the launcher runs in its own session (a terminal's Ctrl-C
# reaches only this script) and a SIGTERM/SIGINT here becomes one SIGTERM to each worker of this node
# (mpirun: to mpirun): train.py then stops every rank after the same step, rank 0 writing a checkpoint.
# A second signal is forwarded too, and stops the workers at once.
STOPPED=""
forward_stop() {
  STOPPED=1
  local pid
  if [[ $LAUNCHER == mpirun ]]; then
    kill -TERM "$LAUNCH_PID" 2>/dev/null || true
    return
  fi
  for pid in $(msrun_children MS_WORKER); do
    kill -TERM "$pid" 2>/dev/null || true
  done
}
# When a worker fails (or stops on a signal) msrun kills the others, then waits for its scheduler, which
# waits out the dead workers' heartbeat timeout before it ends. Once msrun has logged the failure (in
# this run's part of msrun.log, from byte $1), that wait serves nothing: the scheduler is ended.
end_scheduler_after_failure() {
  while kill -0 "$LAUNCH_PID" 2>/dev/null; do
    sleep 1
    if grep -q "exit with exception" < <(tail -c +"$1" "$LOG_DIR/msrun.log" 2>/dev/null); then
      kill -KILL $(msrun_children MS_SCHED) 2>/dev/null || true
      return
    fi
  done
}
mkdir -p "$LOG_DIR"
trap forward_stop TERM INT
# msrun's own messages and its traceback when a worker fails go to msrun.log; the workers' output is shown
LOG_START=$(($(stat -c %s "$LOG_DIR/$LAUNCHER.log" 2>/dev/null || echo 0) + 1))
setsid "${CMD[@]}" 2>>"$LOG_DIR/$LAUNCHER.log" &
LAUNCH_PID=$!
WATCH_PID=""
if [[ $LAUNCHER == msrun ]]; then
  end_scheduler_after_failure "$LOG_START" </dev/null >/dev/null 2>&1 &
  WATCH_PID=$!
fi
while :; do
  status=0
  wait "$LAUNCH_PID" || status=$?
  kill -0 "$LAUNCH_PID" 2>/dev/null || break  # else a trapped signal interrupted the wait
done
[[ -z $WATCH_PID ]] || kill "$WATCH_PID" 2>/dev/null || true
trap - TERM INT
((status != 0)) || { echo "logs: $LOG_DIR"; exit 0; }

# One line: the first worker log (in rank order) that ends with a train.py line (its one-line error, or
# rank 0's stop line), else one that ends with an error, else rank 0's log.
REPORT="" LINE=""
for log in $(worker_logs); do
  line=$(last_line "$log")
  if [[ $line == train.py:* ]]; then REPORT=$log LINE=$line && break; fi
  if [[ -z $REPORT && $line =~ [Ee]rror ]]; then REPORT=$log LINE=$line; fi
done
[[ -n $REPORT ]] || { REPORT=$FIRST_LOG && LINE=$(last_line "$FIRST_LOG"); }
if [[ $LINE =~ ^train\.py:\ stopped\ by\ (SIG[A-Z]+)\ (.*)\;\ checkpoint\ ([^ ;]+)\; ]]; then
  signal=${BASH_REMATCH[1]}
  echo "$(basename "$0"): stopped by $signal ${BASH_REMATCH[2]}; checkpoint ${BASH_REMATCH[3]}; resume with:" \
    "$(resume_command "${BASH_REMATCH[3]}")" >&2
  exit $((128 + $(kill -l "$signal")))
fi
echo "$(basename "$0"): error: training failed (exit $status); $REPORT ends: ${LINE:-(empty)}" >&2
exit "$status"
