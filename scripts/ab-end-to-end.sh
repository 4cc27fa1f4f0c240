#!/usr/bin/env bash
# A/B of `pba bench --parts end_to_end` between a commit and the working tree, in one
# sitting (the development machine is too noisy to compare runs from different hours),
# with the CPU share of each thread of `pba run` read from /proc over 4 s of each run.
#
#   scripts/ab-end-to-end.sh COMMIT [MODE] [RUNS] [EVENTS]
#
# COMMIT is checked out in a temporary git worktree and run with this checkout's venv.
set -euo pipefail
commit=${1:?usage: scripts/ab-end-to-end.sh COMMIT [MODE] [RUNS] [EVENTS]}
mode=${2:-datacenter}
runs=${3:-2}
events=${4:-80000}
here=$(git rev-parse --show-toplevel)
python="$here/.venv/bin/python"
before=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$before"' EXIT
git -C "$here" worktree add -q --detach "$before" "$commit"

cpu_of() {  # ticks per thread of pid $1, the broker and the idle counter
  for t in /proc/"$1"/task/*; do echo "$(basename "$t") $(awk '{print $14+$15}' "$t"/stat)"; done
  echo "broker $(awk '{print $14+$15}' /proc/"$(pgrep -x tansu | head -1)"/stat)"
  echo "idle $(awk '/^cpu /{print $5}' /proc/stat)"
}

one_run() {  # $1: label, $2: tree to run
  local out pid
  out=$(mktemp)
  (cd "$2" && "$python" -m consumer.cli bench --mode "$mode" --parts end_to_end --events "$events" >"$out" 2>/dev/null) &
  local bench=$!
  until pid=$(pgrep -f "consumer.cli run" | head -1); do sleep 0.2; done
  sleep 9
  cpu_of "$pid" >"$out.1" 2>/dev/null || true; sleep 4; cpu_of "$pid" >"$out.2" 2>/dev/null || true
  wait "$bench"
  echo "$1: $(grep 'end to end' "$out" | cut -d'|' -f3,4) | % of a core:" \
    "$(paste "$out.1" "$out.2" | awk -v main="$pid" '{v=($4-$2)/4; if (v>0) printf "%s=%.0f ", ($1==main?"event-loop":$1), v}')"
  rm -f "$out" "$out.1" "$out.2"
}

for _ in $(seq "$runs"); do
  one_run "before ($commit)" "$before"
  one_run "after (working tree)" "$here"
done
