#!/usr/bin/env bash
# Install everything into .venv (scripts/setup.sh), build the ROS 2 package (scripts/ros_setup.sh),
# then run the perception node end to end with the built-in tiny random models: start the node,
# send the bundled image with the query "the red cup" as an action goal, print the result, and
# stop the node. The tiny models' answer is meaningless; this shows the plumbing, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/ros_setup.sh
set +u  # ROS setup scripts read unset variables
# shellcheck disable=SC1091
source install/setup.bash
set -u
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}

# The tiny checkpoints are built once (a minute or two) into ~/.cache/segzero, then reused.
.venv/bin/python -c "from segzero_model.tiny import ensure_tiny_models; ensure_tiny_models()"
.venv/bin/segzero-perception --tiny --ros-args -p device:=cpu > demo_node.log 2>&1 &
node_pid=$!
trap 'kill -INT $node_pid 2>/dev/null; wait $node_pid 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  grep -q "active:" demo_node.log && break
  kill -0 $node_pid 2>/dev/null || { cat demo_node.log; exit 1; }
  sleep 0.2
done
echo "demo: node is up (log in demo_node.log); sending the query"
.venv/bin/segzero-query "the red cup" --image segzero_model/assets/kitchen.png \
  --save-mask demo_mask.png --save-overlay demo_overlay.png
