# Sourced by setup.sh and check_jazzy.sh (which define log and die).
#
# The ROS wheels' CMake exports name include dirs under /opt/python/cpXY-cpXY (where they were
# built, XY the Python version of the wheel). link_ros_includes VENV points them at this
# machine's Python headers and VENV's numpy, so that colcon can build iphd_msgs against the
# wheels installed in VENV.

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@";
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@";
  else die "need root for: $* (run it once by hand with sudo, then re-run make)"; fi
}

link_ros_includes() {
  local venv=$1 pyinc npinc
  pyinc=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  npinc=$("$venv/bin/python" -c 'import numpy; print(numpy.get_include())')
  local ver tag
  ver=$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  tag=cp${ver/./}-cp${ver/./}
  local want_py=/opt/python/$tag/include/python$ver
  local want_np=/opt/python/$tag/lib/python$ver/site-packages/numpy/_core/include
  if [ "$(readlink -f "$want_py" 2>/dev/null)" != "$(readlink -f "$pyinc")" ] \
     || [ "$(readlink -f "$want_np" 2>/dev/null)" != "$(readlink -f "$npinc")" ]; then
    log "linking the include dirs the ROS wheels expect under /opt/python/$tag to $venv"
    as_root mkdir -p "$(dirname "$want_py")" "$(dirname "$want_np")"
    as_root ln -sfn "$pyinc" "$want_py"
    as_root ln -sfn "$npinc" "$want_np"
  fi
}
