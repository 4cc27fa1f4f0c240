#!/usr/bin/env bash
# Measure moving produce work off the service's Python thread (issue #21, point 3):
# librdkafka's producer, which batches and sends in threads of its own, against
# aiokafka's, which does it on the event loop. Not shipped: it did not win by more than
# the noise (docs/BENCHMARKS.md). This applies librdkafka.patch to HEAD in a temporary
# worktree, installs confluent-kafka into this checkout's venv, and runs ab.py there.
#
#   scripts/producer-ab/run.sh [PAIRS] [SHAPE] [MODE] [LATENCY_RATE ...]
set -euo pipefail
here=$(git rev-parse --show-toplevel)
python="$here/.venv/bin/python"
pairs=${1:-4}; shape=${2:-2x1}; mode=${3:-datacenter}; shift $(( $# < 3 ? $# : 3 ))
"$python" -m pip install --quiet confluent-kafka==2.16.1
tree=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$tree"' EXIT
git -C "$here" worktree add -q --detach "$tree" HEAD
git -C "$tree" apply "$here/scripts/producer-ab/librdkafka.patch"
cd "$tree" && PYTHONPATH="$tree" "$python" "$here/scripts/producer-ab/ab.py" "$pairs" "$shape" "$mode" "$@"
