#!/usr/bin/env bash
# Run a command inside the project environment: the venv plus the colcon-built iphd_msgs.
# Usage: scripts/env.sh COMMAND [ARGS...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${IPHD_VENV:-$ROOT/.venv}
MSGS=${IPHD_MSGS:-$ROOT/ros2_ws/install/iphd_msgs}
export VIRTUAL_ENV=$VENV
export PATH="$VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$MSGS:$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export LD_LIBRARY_PATH="$MSGS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# colcon installs the interfaces' Python modules under the venv's python version.
PYVER=$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
export PYTHONPATH="$MSGS/lib/python$PYVER/site-packages${PYTHONPATH:+:$PYTHONPATH}"
export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
exec "$@"
