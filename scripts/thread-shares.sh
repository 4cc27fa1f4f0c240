#!/usr/bin/env bash
# The CPU share of each thread of `pba run --workers 2` (the bench's 2x1 shape), and of the
# broker, over 4 s in the middle of `pba bench --parts end_to_end`, read from /proc.
#
#   scripts/thread-shares.sh [MODE] [EVENTS] [SECONDS_BEFORE_THE_SAMPLE]
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mode=${1:-datacenter}; events=${2:-160000}; wait_s=${3:-10}
.venv/bin/python -m consumer.cli bench --mode "$mode" --parts end_to_end --events "$events" \
  >/dev/null 2>&1 &
bench=$!
snapshot() {  # "process/thread ticks" per thread of the supervisor and its workers; the broker
  local sup
  sup=$(pgrep -f "consumer.cli run.*--workers 2" | head -1)
  for pid in $sup $(pgrep -P "$sup"); do
    for t in /proc/"$pid"/task/*; do
      echo "$pid/$(basename "$t")/$(tr -d ' ' <"$t"/comm) $(awk '{print $14+$15}' "$t"/stat)"
    done
  done
  echo "broker $(awk '{print $14+$15}' /proc/"$(pgrep -x tansu | head -1)"/stat)"
}
until pgrep -f "consumer.cli run.*--workers 2" >/dev/null; do sleep 0.5; done
sleep "$wait_s"
before=$(snapshot); sleep 4; after=$(snapshot)
ticks=$(getconf CLK_TCK)
join <(sort <<<"$before") <(sort <<<"$after") |
  awk -v hz="$ticks" '{share = ($3 - $2) / hz / 4 * 100; if (share >= 1) printf "%5.0f %%  %s\n", share, $1}' |
  sort -rn
wait "$bench"
