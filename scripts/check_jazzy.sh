#!/usr/bin/env bash
# Run the test suite against ROS 2 Jazzy's wheels instead of Kilted's (a check by hand; CI runs
# Kilted). Usage: scripts/check_jazzy.sh [--robot | --robot-kilted] [PYTEST ARGS...]   (after
# `make setup`, which
# installs libusb; about 1 min of pip and 15 s of colcon once). It points the include dirs the
# ROS wheels' CMake exports name at the venv while it builds iphd_msgs; the next `make` build of
# iphd_msgs points them back at .venv.
#
# --robot: as on a robot with ROS 2 Jazzy from apt on Ubuntu 24.04: Python 3.12 and
# requirements-robot.txt (NumPy below 2, OpenCV 4.11, flirpy 0.3.0), with Ubuntu 24.04's own
# versions of what apt brings (NumPy 1.26.4, SciPy 1.11.4, PyYAML 6.0.1), in .venv-robot. Its
# torch is PyPI's 2.13.0 (a CUDA build, several GB with its libraries; it runs on the CPU here),
# which needs setuptools 77 or newer: pip puts one beside apt's 68, as it would on the robot.
# --robot-kilted: the same with ROS 2 Kilted's wheels (requirements.txt's), in .venv-robot-kilted.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROBOT=0
DISTRO=jazzy
case "${1:-}" in
  --robot) ROBOT=1; shift ;;
  --robot-kilted) ROBOT=1; DISTRO=kilted; shift ;;
esac
if [ "$ROBOT" = 1 ]; then
  if [ "$DISTRO" = kilted ]; then SUFFIX=robot-kilted; else SUFFIX=robot; fi
  VENV=${IPHD_JAZZY_VENV:-$ROOT/.venv-$SUFFIX}
  PYTHON=${PYTHON:-python3.12}
else
  VENV=${IPHD_JAZZY_VENV:-$ROOT/.venv-jazzy}
  PYTHON=${PYTHON:-python3.11}
  SUFFIX=jazzy
fi
if [ "$DISTRO" = kilted ]; then RCLPY_MAJOR=9; else RCLPY_MAJOR=7; fi

quiet_pip() { grep -v "is ignored: it is neither a file nor a directory" || true; }
log() { printf '\033[1;34m[%s]\033[0m %s\n' "$SUFFIX" "$*"; }
die() { printf '\033[1;31m[%s] error:\033[0m %s\n' "$SUFFIX" "$*" >&2; exit 1; }

# shellcheck source=scripts/ros_includes.sh
. "$ROOT/scripts/ros_includes.sh"   # as_root, link_ros_includes
# Installed once, and again whenever a requirements file or setup.py changed since (as make's
# set-up stamp).
if [ ! -f "$VENV/.iphd-jazzy" ] \
    || [ -n "$(find requirements*.txt setup.py -newer "$VENV/.iphd-jazzy")" ]; then
  [ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  if [ "$ROBOT" = 1 ]; then
    log "installing requirements-robot.txt with ROS 2 $DISTRO's wheels, as on Ubuntu 24.04"
    # What apt gives Ubuntu 24.04 (rosdep's python3-* keys), and the tools the tests and the
    # interface build need; the robot's own pins come from requirements-robot.txt.
    printf '%s\n' numpy==1.26.4 scipy==1.11.4 PyYAML==6.0.1 torch==2.13.0 \
      > "$VENV/constraints-noble.txt"
    grep -E '^(pytest|pytest-timeout|colcon-common-extensions|tqdm|mcap)==' requirements.txt \
      > "$VENV/requirements-tools.txt"
    if [ "$DISTRO" = kilted ]; then
      grep '^ros-' requirements.txt > "$VENV/requirements-ros.txt"
    else
      cp requirements-jazzy.txt "$VENV/requirements-ros.txt"
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check -c "$VENV/constraints-noble.txt" \
      -r requirements-robot.txt -r "$VENV/requirements-ros.txt" \
      -r "$VENV/requirements-tools.txt" numpy scipy PyYAML 2>&1 | quiet_pip
  else
    log "installing requirements.txt with ROS 2 Jazzy's wheels in place of Kilted's"
    # Kilted's ROS pins (and constraints.txt, which pins Kilted's dependencies) stay out.
    grep -v '^ros-' requirements.txt > "$VENV/requirements-no-ros.txt"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$VENV/requirements-no-ros.txt" \
      -r requirements-jazzy.txt 2>&1 | quiet_pip
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt 2>&1 \
    | quiet_pip
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 \
    | quiet_pip
  "$VENV/bin/python" -c "import importlib.metadata as m, sys; v = m.version('ros-rclpy'); \
sys.exit(0 if v.startswith('$RCLPY_MAJOR.') else f'rclpy {v}')" \
    || die "the venv's rclpy is not $DISTRO's ($RCLPY_MAJOR.x): see the pip output above"
  touch "$VENV/.iphd-jazzy"
fi
MSGS_BASE=$ROOT/ros2_ws/install-$SUFFIX
# Built once, and again whenever an interface file changed since (as make's MSG_FILES rule).
if [ ! -f "$MSGS_BASE/.iphd-msgs-built" ] \
    || [ -n "$(find ros2_ws/src/iphd_msgs -type f -newer "$MSGS_BASE/.iphd-msgs-built")" ]; then
  log "building iphd_msgs with $DISTRO's rosidl into ros2_ws/install-$SUFFIX"
  link_ros_includes "$VENV"
  (
    cd ros2_ws
    export PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
    colcon --log-base "log-$SUFFIX" build --build-base "build-$SUFFIX" \
      --install-base "install-$SUFFIX" \
      --packages-select iphd_msgs --event-handlers console_cohesion- summary+ 2>&1 \
      | { grep -v "doesn't contain any 'local_setup" || true; }
  ) || die "colcon build of iphd_msgs against $DISTRO failed (see above)"
  [ -d "$MSGS_BASE/iphd_msgs/lib" ] \
    || die "colcon did not produce ros2_ws/install-$SUFFIX/iphd_msgs"
  touch "$MSGS_BASE/.iphd-msgs-built"
fi
log "pytest with rclpy $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("ros-rclpy"))') on $("$VENV/bin/python" -V)"
IPHD_VENV=$VENV IPHD_MSGS=$MSGS_BASE/iphd_msgs exec scripts/env.sh python -m pytest "$@"
