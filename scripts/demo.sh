#!/usr/bin/env bash
# Install everything into .venv (see setup.sh), then run the offline demo on the bundled image
# with the built-in tiny random models (their answer is meaningless; it shows the plumbing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/segzero infer --tiny --image segzero_model/assets/kitchen.png --query "the red cup" \
  --json demo_result.json --output demo_overlay.png
