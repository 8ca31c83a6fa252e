#!/usr/bin/env bash
# One-shot set-up of the development environment: system library, venv with pinned wheels, ros2_ws.
# Usage: scripts/setup.sh [system|venv|msgs|all]   (make calls it; each step is skipped when done)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${IPHD_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3.11}
step=${1:-all}

# Drop pip's notes about index folders that this machine's pip.conf names but that do not
# exist; never fails, so a pipeline's status stays pip's own (pipefail).
quiet_pip() { grep -v "is ignored: it is neither a file nor a directory" || true; }

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/ros_includes.sh
. "$ROOT/scripts/ros_includes.sh"   # as_root, link_ros_includes

system_step() {
  # pyrealsense2's wheel links against the system libusb-1.0.
  # grep without -q: with pipefail, -q would stop reading early and fail the pipeline.
  if ! ldconfig -p 2>/dev/null | grep 'libusb-1.0.so.0' >/dev/null; then
    log "installing libusb-1.0-0 (needed by pyrealsense2)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
  fi
}

venv_step() {
  command -v "$PYTHON" >/dev/null || PYTHON=python3
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || die "Python 3.11 is required (the ROS 2 Kilted wheels are cp311); found $("$PYTHON" --version)"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  log "installing pinned requirements (torch 2.13.0 CPU, ROS 2 Kilted wheels, colcon, ...)"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt -c constraints.txt 2>&1 \
    | quiet_pip || die "pip could not install requirements.txt (see above)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt 2>&1 \
    | quiet_pip || die "pip could not install requirements-nodeps.txt (see above)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 \
    | quiet_pip || die "pip could not install the iphd package itself (see above)"
  "$VENV/bin/python" \
    -c 'import torch, rclpy, pyrealsense2, flirpy, rosbags, cv2, numba, onnx, onnxruntime, motmetrics, iphd' \
    || die "the venv is incomplete: see the pip output above"
  "$VENV/bin/python" -c 'from iphd.eval.mot import hota_metric; assert hota_metric() is not None' \
    || die "trackeval (HOTA of iphd-eval) does not import: see the pip output above"
  touch "$VENV/.iphd-setup"
}

msgs_step() {
  link_ros_includes "$VENV"
  log "building ros2_ws (iphd_msgs) with colcon"
  (
    cd ros2_ws
    export PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
    colcon --log-base log build --packages-select iphd_msgs --event-handlers console_cohesion- \
      summary+ 2>&1 | { grep -v "doesn't contain any 'local_setup" || true; }
  ) || die "colcon build of iphd_msgs failed (see above)"
  [ -d ros2_ws/install/iphd_msgs/lib ] || die "colcon did not produce ros2_ws/install/iphd_msgs"
  touch ros2_ws/install/.iphd-msgs-built
}

case "$step" in
  system) system_step ;;
  venv) system_step; venv_step ;;
  msgs) msgs_step ;;
  all) system_step; venv_step; msgs_step ;;
  *) die "unknown step '$step' (system|venv|msgs|all)" ;;
esac
