#!/usr/bin/env bash
# Create (or reuse) a Cloud TPU VM, copy this checkout to every worker, install it, and run the
# same `lmx train ...` on all workers. Multi-host slices start jax.distributed automatically
# (LMX_DISTRIBUTED=auto: JAX reads the TPU metadata).
#
#   scripts/launch_tpu_vm.sh --name NAME --zone ZONE [--accelerator-type v5litepod-16]
#       [--version v2-alpha-tpuv5-lite] [--project PROJECT] [--queued [--spot] | --existing] [--dry-run]
#       -- --config default --set 'mesh.shape={"fsdp": -1}' --set mesh.strategy=fsdp
#
# --queued   request the slice as a queued resource and wait until it is ACTIVE
# --existing the TPU VM exists already (a pool slice): create nothing, copy, install and run
# --dry-run  print the exact commands (one per line) without running any of them
set -euo pipefail

NAME="" ZONE="" TYPE="v5litepod-16" VERSION="v2-alpha-tpuv5-lite" PROJECT="" QUEUED=0 SPOT=0 EXISTING=0 DRY=0
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --accelerator-type) TYPE="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --queued) QUEUED=1; shift ;;
    --spot) SPOT=1; shift ;;
    --existing) EXISTING=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "launch_tpu_vm.sh: unknown argument $1 (lmx arguments go after --)" >&2; exit 2 ;;
  esac
done
[[ -n "$NAME" && -n "$ZONE" ]] || { echo "launch_tpu_vm.sh: --name and --zone are required" >&2; exit 2; }
[[ $# -gt 0 ]] || { echo "launch_tpu_vm.sh: give the lmx train arguments after --" >&2; exit 2; }
[[ $EXISTING -eq 1 && $QUEUED -eq 1 ]] && { echo "launch_tpu_vm.sh: --existing and --queued exclude each other" >&2; exit 2; }

q() {  # shell-quote one word: as is when safe, else in single quotes
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
qall() { local out="" w; for w in "$@"; do out+=" $(q "$w")"; done; printf '%s' "$out"; }
LMX_ARGS="$(qall "$@")"
COMMON=(--zone="$ZONE")
[[ -n "$PROJECT" ]] && COMMON+=(--project="$PROJECT")
TARBALL="/tmp/lmx-src-$NAME.tar.gz"

run() {  # print the command (dry run) or run it
  if [[ $DRY -eq 1 ]]; then qall "$@" | sed 's/^ //'; echo; else "$@"; fi
}

# 1. the TPU VM: reuse it if it exists, otherwise create it (directly or as a queued resource)
if [[ $EXISTING -eq 1 ]]; then
  :  # a slice of the caller's pool: never created or deleted here
elif [[ $QUEUED -eq 1 ]]; then
  create=(gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" "${COMMON[@]}"
          --accelerator-type="$TYPE" --runtime-version="$VERSION")
  [[ $SPOT -eq 1 ]] && create+=(--spot)
  if [[ $DRY -eq 1 ]] || ! gcloud compute tpus queued-resources describe "$NAME" "${COMMON[@]}" >/dev/null 2>&1; then
    run "${create[@]}"
  fi
  wait_cmd=(gcloud compute tpus queued-resources describe "$NAME" "${COMMON[@]}" --format="value(state.state)")
  if [[ $DRY -eq 1 ]]; then run "${wait_cmd[@]}"; else
    until [[ "$("${wait_cmd[@]}")" == ACTIVE ]]; do echo "waiting for queued resource $NAME ..."; sleep 30; done
  fi
else
  create=(gcloud compute tpus tpu-vm create "$NAME" "${COMMON[@]}" --accelerator-type="$TYPE" --version="$VERSION")
  [[ $SPOT -eq 1 ]] && create+=(--spot)
  if [[ $DRY -eq 1 ]] || ! gcloud compute tpus tpu-vm describe "$NAME" "${COMMON[@]}" >/dev/null 2>&1; then
    run "${create[@]}"
  fi
fi

# 2. copy this checkout (no .git, virtualenvs, caches or runs) to every worker and install it
run tar -czf "$TARBALL" -C "$REPO" --exclude=.git --exclude=.venv --exclude=.cache --exclude=runs .
run gcloud compute tpus tpu-vm scp "$TARBALL" "$NAME":lmx-src.tar.gz --worker=all "${COMMON[@]}"
run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all "${COMMON[@]}" \
  --command="mkdir -p ~/lmx && tar -xzf ~/lmx-src.tar.gz -C ~/lmx && cd ~/lmx && pip install -q -e . 'jax[tpu]'"

# 3. the same command on every worker; process 0 writes the run directory
run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all "${COMMON[@]}" \
  --command="cd ~/lmx && LMX_DISTRIBUTED=auto python3 -m lmx.cli train$LMX_ARGS"
