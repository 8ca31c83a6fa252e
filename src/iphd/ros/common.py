"""Helpers shared by the iphd nodes: parameters, package files, rate meters, diagnostics."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from iphd.graph import PACKAGE

REPO_ROOT = Path(__file__).resolve().parents[3]

LEVELS = {"OK": DiagnosticStatus.OK, "WARN": DiagnosticStatus.WARN, "ERROR": DiagnosticStatus.ERROR}


def declare(node: Node, name: str, default: Any, description: str) -> Any:
    """Declare a parameter with a description and return its value."""
    node.declare_parameter(name, default, ParameterDescriptor(description=description))
    return node.get_parameter(name).value


def package_file(relative: str) -> Path:
    """Return a file shipped with the package (source tree first, then the ament share dir).

    Raises:
        FileNotFoundError: naming both places looked at.
    """
    candidates = [REPO_ROOT / relative]
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.append(Path(get_package_share_directory(PACKAGE)) / relative)
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{relative} not found in {', '.join(str(c.parent) for c in candidates)}; "
        "is the iphd_bringup package installed (colcon build / pip install -e .)?"
    )


class RateMeter:
    """Message rate over a sliding window of arrival times (monotonic clock)."""

    def __init__(self, window_s: float = 2.0) -> None:
        self._window_ns = int(window_s * 1e9)
        self._times: deque[int] = deque()
        self.count = 0
        self.last_ns: int | None = None

    def tick(self, now_ns: int | None = None) -> None:
        """Record one arrival."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        self._times.append(now)
        self.count += 1
        self.last_ns = now
        self._trim(now)

    def _trim(self, now: int) -> None:
        while self._times and now - self._times[0] > self._window_ns:
            self._times.popleft()

    def rate_hz(self, now_ns: int | None = None) -> float:
        """Arrivals per second over the window."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], self._times[-1] - self._times[0])
        return (len(self._times) - 1) / (span / 1e9) if span > 0 else 0.0

    def age_s(self, now_ns: int | None = None) -> float:
        """Seconds since the last arrival (inf if none)."""
        if self.last_ns is None:
            return float("inf")
        now = time.monotonic_ns() if now_ns is None else now_ns
        return (now - self.last_ns) / 1e9


def diagnostic_array(
    node: Node, name: str, level: str, message: str, values: dict[str, Any], hardware_id: str = ""
) -> DiagnosticArray:
    """Return a one-status DiagnosticArray stamped with the node's clock."""
    status = DiagnosticStatus(
        level=LEVELS[level],
        name=f"{node.get_fully_qualified_name().lstrip('/')}: {name}",
        message=message,
        hardware_id=hardware_id,
    )
    status.values = [KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()]
    return DiagnosticArray(header=_stamp_header(node), status=[status])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _stamp_header(node: Node):  # noqa: ANN202 - std_msgs Header
    from std_msgs.msg import Header

    return Header(stamp=node.get_clock().now().to_msg())


def spin_node(factory: Callable[[], Node], args: list[str] | None = None) -> None:
    """Create a node with ``factory`` and spin it until Ctrl-C or shutdown (console-script main)."""
    rclpy.init(args=args)
    node = factory()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        close = getattr(node, "close", None)
        if callable(close):
            close()
        node.destroy_node()
        rclpy.try_shutdown()
