# Shared by the run_*.sh scripts (sourced, not run): the repository's python and argument parsing.
# Scripts do not cd: DATA, --output and other relative paths stay relative to the caller's directory.

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$REPO_DIR/.venv/bin/python" ]]; then
  PYTHON="$REPO_DIR/.venv/bin/python"
else
  PYTHON=python
fi

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

# take_data USAGE ARGS...: the first argument is the required positional one, named in USAGE after
# the script (DATA, CONFIG); sets DATA and the caller then shifts once.
take_data() {
  local usage=$1 name
  shift
  name=${usage#* }
  name=${name%% *}
  if (($# == 0)) || [[ $1 == -* ]]; then
    [[ ${1:-} == -h || ${1:-} == --help ]] && { echo "usage: $usage"; exit 0; }
    die "$name is required (usage: $usage)"
  fi
  DATA=$1
}

# parse_options USAGE "SPEC ..." ARGS...: options that each take one value, except flags. A SPEC is
# `--opt` (passed on to python as is), `--opt=--py_opt` (passed on renamed), `--opt=@VAR` (kept in shell
# variable VAR) or `--opt=!VAR` (a flag without value: sets VAR=1).
# --extra passes everything after it unchanged. Sets PY_ARGS.
parse_options() {
  local usage=$1 specs=" $2 " spec target
  shift 2
  PY_ARGS=()
  while (($#)); do
    case $1 in
      --extra)
        shift
        PY_ARGS+=("$@")
        return
        ;;
      -h | --help)
        echo "usage: $usage"
        exit 0
        ;;
      *)
        spec=$(tr ' ' '\n' <<<"$specs" | grep -E -- "^$1(=|\$)" || true)
        [[ -n $spec ]] || die "unknown argument $1 (usage: $usage)"
        target=${spec#*=}
        if [[ $target == !* ]]; then
          printf -v "${target#!}" '%s' 1
          shift
          continue
        fi
        (($# >= 2)) || die "$1 needs a value"
        if [[ $target == @* ]]; then
          printf -v "${target#@}" '%s' "$2"
        else
          PY_ARGS+=("$target" "$2")
        fi
        shift 2
        ;;
    esac
  done
}

# preflight CONFIG NUM_DEVICES DEVICE_IDS PY_ARGS...: stop in one line, before any worker starts, when the
# configured device_target is missing from this MindSpore or has fewer devices than asked for
# (src/runtime/preflight.py; on CPU the count is not checked).
preflight() {
  local config=$1 num=$2 ids=$3
  shift 3
  PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m src.runtime.preflight --script "$(basename "$0")" \
    --config "$config" --num_devices "$num" --device_ids "$ids" "$@" || exit 2
}

# last_line LOG: the last line of a worker log that is not blank or one of MindSpore's WARNING/INFO lines
last_line() {
  grep -v -E '^\[(WARNING|INFO|DEBUG)\]|^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 || true
}
