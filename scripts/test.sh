#!/usr/bin/env bash
# One command on a fresh machine: set everything up, then run every test tier (unit,
# integration against real components, end-to-end with real guests). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-firecracker-kernel
echo "lint: type-check and formatting" >&2
npm run --silent lint >/dev/null
exec node scripts/run-tests.mjs "$@"
