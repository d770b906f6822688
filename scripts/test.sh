#!/usr/bin/env bash
# Install everything into .venv (scripts/setup.sh), build the ROS 2 package with colcon
# (scripts/ros_setup.sh), then run the linter and the whole test suite in the sourced workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/ros_setup.sh
set +u  # ROS setup scripts read unset variables
# shellcheck disable=SC1091
source install/setup.bash
set -u
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
