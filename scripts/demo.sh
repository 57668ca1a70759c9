#!/usr/bin/env bash
# One command on a fresh machine: set everything up, then run the demo (boot a function,
# call it, snapshot it, restore clones, show the latencies). Extra arguments go to the demo
# (e.g. --json, --clones 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node bin/embers.js demo "$@"
