#!/usr/bin/env bash
# Run `lmx train ...` as one process per GPU host, wired together by the coordinator variables
# LMX_COORDINATOR (host:port of process 0), LMX_NUM_PROCESSES and LMX_PROCESS_ID.
#
# Over ssh (the checkout and its environment must exist at --workdir on every host):
#   scripts/launch_gpu_multinode.sh --hosts node1,node2 [--port 12355] [--workdir DIR] [--dry-run] \
#       -- --config default --set 'mesh.shape={"fsdp": -1}' --set mesh.strategy=fsdp
# Under SLURM (prints/runs one srun; put it in an sbatch script with --nodes=N --ntasks-per-node=1):
#   scripts/launch_gpu_multinode.sh --slurm --nodes 2 [--port 12355] [--workdir DIR] [--dry-run] -- ARGS
#
# --dry-run  print the exact commands (one per line) without running any of them
set -euo pipefail

HOSTS="" PORT=12355 WORKDIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" SLURM=0 NODES=0 DRY=0
usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --hosts) HOSTS="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --workdir) WORKDIR="$2"; shift 2 ;;
    --slurm) SLURM=1; shift ;;
    --nodes) NODES="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "launch_gpu_multinode.sh: unknown argument $1 (lmx arguments go after --)" >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "launch_gpu_multinode.sh: give the lmx train arguments after --" >&2; exit 2; }
q() {  # shell-quote one word: as is when safe, else in single quotes
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
qall() { local out="" w; for w in "$@"; do out+=" $(q "$w")"; done; printf '%s' "$out"; }
LMX_ARGS="$(qall "$@")"
WD="$(q "$WORKDIR")"

if [[ $SLURM -eq 1 ]]; then
  [[ "$NODES" -ge 1 ]] || { echo "launch_gpu_multinode.sh: --slurm needs --nodes N" >&2; exit 2; }
  inner="cd $WD && LMX_COORDINATOR=\$(scontrol show hostnames \"\$SLURM_JOB_NODELIST\" | head -n1):$PORT"
  inner+=" LMX_NUM_PROCESSES=\$SLURM_NTASKS LMX_PROCESS_ID=\$SLURM_PROCID python -m lmx.cli train$LMX_ARGS"
  cmd=(srun --nodes="$NODES" --ntasks-per-node=1 bash -c "$inner")
  if [[ $DRY -eq 1 ]]; then qall "${cmd[@]}" | sed 's/^ //'; echo; else exec "${cmd[@]}"; fi
  exit 0
fi

[[ -n "$HOSTS" ]] || { echo "launch_gpu_multinode.sh: --hosts h1,h2,... (or --slurm --nodes N) is required" >&2; exit 2; }
IFS=',' read -r -a HOST_LIST <<< "$HOSTS"
N=${#HOST_LIST[@]}
COORD="${HOST_LIST[0]}:$PORT"
pids=()
for i in "${!HOST_LIST[@]}"; do
  remote="cd $WD && LMX_COORDINATOR=$COORD LMX_NUM_PROCESSES=$N LMX_PROCESS_ID=$i python -m lmx.cli train$LMX_ARGS"
  cmd=(ssh "${HOST_LIST[$i]}" "$remote")
  if [[ $DRY -eq 1 ]]; then qall "${cmd[@]}" | sed 's/^ //'; echo; continue; fi
  "${cmd[@]}" 2>&1 | sed "s/^/[${HOST_LIST[$i]}] /" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
