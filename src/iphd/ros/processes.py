"""One process per node for the runner, as ``ros2 launch`` starts them.

A node process is ``python -m iphd.ros.processes FD``: it imports only what its own node needs
(the fusion node never loads torch) and talks to the runner over the pipe whose end it inherits
as file descriptor ``FD``: the node to build comes in, readiness and the node's ``stats()``
go out.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from types import SimpleNamespace
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.logging import LoggingSeverity
from rclpy.node import Node
from rclpy.parameter import Parameter

from iphd import graph
from iphd.errors import IphdError
from iphd.graph import NodeSpec, parameters_for, unknown_parameters
from iphd.ros.common import CallbackGuard, make_executor

LOG_LEVELS = {name: LoggingSeverity[name.upper()] for name in graph.LOG_LEVELS}
#: Seconds between the stats a node process reports to the runner.
REPORT_PERIOD_S = 0.5
#: Seconds a node process may take to build its node (imports, model loading) before the
#: runner gives up on it.
START_TIMEOUT_S = 120.0
#: Seconds a node process gets to report its last stats and exit after "stop".
STOP_TIMEOUT_S = 10.0


class NodeProcessError(IphdError):
    """A node process failed to start (its node raised, or it died or hung while starting)."""


def process_memory_mb(pid: int | str = "self") -> tuple[float, float]:
    """(resident, peak resident) memory of a process now (VmRSS, VmHWM), MB; NaN if unknown."""
    found = {"VmRSS:": float("nan"), "VmHWM:": float("nan")}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(maxsplit=1)[0] if line.strip() else ""
                if key in found:
                    found[key] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return found["VmRSS:"], found["VmHWM:"]


def _usage() -> dict[str, float]:
    """This process's memory and CPU time, for the runner."""
    rss, peak = process_memory_mb()
    times = os.times()
    return {"rss_mb": rss, "peak_rss_mb": peak, "cpu_s": times.user + times.system}


def relative_topic(name: str, namespace: str) -> str:
    """A fully qualified topic name relative to ``namespace`` (as the nodes name them)."""
    prefix = "/" + namespace.strip("/") + "/" if namespace.strip("/") else "/"
    return name[len(prefix):] if name.startswith(prefix) else name


def make_nodes(
    specs: tuple[NodeSpec, ...],
    params: dict[str, dict[str, Any]],
    namespace: str = "",
    use_sim_time: bool = False,
    context: Context | None = None,
) -> dict[str, Node]:
    """Instantiate the graph's nodes with their parameters, namespace and remappings."""
    nodes: dict[str, Node] = {}
    for spec in specs:
        values = {**parameters_for(params, spec.name, namespace), **spec.parameters}
        values["use_sim_time"] = use_sim_time
        overrides = [Parameter(k, value=v) for k, v in values.items()]
        cli = ["--ros-args"] + [a for f, t in spec.remappings for a in ("-r", f"{f}:={t}")]
        cls = getattr(importlib.import_module(spec.module), spec.node_class)
        node = nodes[spec.name] = cls(
            namespace=namespace,
            parameter_overrides=overrides,
            cli_args=cli if spec.remappings else None,
            context=context,
        )
        declared = node.get_parameters_by_prefix("")
        for message in unknown_parameters(params, spec.name, namespace, declared):
            node.get_logger().warning(message)
    return nodes


def _node_main(conn: Connection) -> None:
    """Body of a node process: build the node the runner sends, spin it, report until "stop"."""
    spec, params, namespace, use_sim_time, log_level = conn.recv()
    # Ctrl-C goes to the whole process group, and so does a service manager's SIGTERM: the
    # runner stops its children itself, after it has collected what they did.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    context = Context()
    rclpy.init(context=context)
    try:
        executor = make_executor(context)
        (node,) = make_nodes((spec,), params, namespace, use_sim_time, context).values()
    except Exception as exc:  # the runner shows it and stops the graph
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        rclpy.try_shutdown(context=context)
        return
    node.get_logger().set_level(LOG_LEVELS[log_level])
    executor.add_node(node)
    parameters = {name: p.value for name, p in node.get_parameters_by_prefix("").items()}
    subscribes = [relative_topic(sub.topic_name, namespace) for sub in node.subscriptions]
    conn.send(
        (
            "ready",
            {
                "pid": os.getpid(),
                "parameters": parameters,
                "subscribes": subscribes,
                "executor": type(executor).__name__,
            },
        )
    )

    def report(kind: str) -> None:
        stats_of = getattr(node, "stats", None)
        stats = stats_of() if callable(stats_of) else {}
        conn.send((kind, {"stats": stats, **_usage()}))

    next_report = time.monotonic()
    guard = CallbackGuard(node.get_logger().error)
    try:
        while True:
            guard.spin_once(executor, 0.02)
            if time.monotonic() >= next_report:
                next_report += REPORT_PERIOD_S
                report("stats")
            if conn.poll() and conn.recv() == "stop":
                report("final")
                break
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the runner is gone: stop quietly
    finally:
        close = getattr(node, "close", None)
        if callable(close):
            close()
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown(context=context)


class NodeProcess:
    """A node running in a child process, seen from the runner.

    It stands in for the node object of a one-process run where the runner and benchmarks
    read it: ``stats()`` (the latest the child reported, every ``REPORT_PERIOD_S``),
    ``get_parameter(name).value`` (as declared at start), ``started`` and ``finished`` (a bag
    player that began to play, that reached the end of its bag), ``subscribes`` (its
    subscriptions' topics, relative to the namespace, once started), ``executor`` (the class
    of the executor spinning it, see ``iphd.ros.common.make_executor``), plus ``pid`` and, as
    of the child's last report, ``rss_mb``, ``peak_rss_mb`` (resident memory now and at its
    peak) and ``cpu_s`` (CPU time used).

    Args:
        spec: the node to run.
        params: the parsed parameters file (with overrides).
        namespace: namespace of the node.
        use_sim_time: the node follows ``/clock``.
        log_level: ``debug``, ``info``, ``warn`` or ``error``.
    """

    def __init__(
        self,
        spec: NodeSpec,
        params: dict[str, dict[str, Any]],
        namespace: str,
        use_sim_time: bool,
        log_level: str,
    ) -> None:
        self.name = spec.name
        self._conn, child = Pipe()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "iphd.ros.processes", str(child.fileno())],
            pass_fds=(child.fileno(),),
        )
        child.close()
        self._conn.send((spec, params, namespace, use_sim_time, log_level))
        self._stats: dict[str, Any] = {}
        self._parameters: dict[str, Any] = {}
        self.pid: int | None = None
        self.subscribes: list[str] = []
        self.executor = ""
        self.rss_mb = self.peak_rss_mb = self.cpu_s = float("nan")
        self._closed = False

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Block until the child has built its node.

        Raises:
            NodeProcessError: the node raised while being built (the message is the child's),
                or the child died or did not report within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._conn.poll(0.1):
                try:
                    kind, payload = self._conn.recv()
                except EOFError:
                    break
                if kind == "ready":
                    self.pid = int(payload["pid"])
                    self._parameters = dict(payload["parameters"])
                    self.subscribes = list(payload["subscribes"])
                    self.executor = str(payload["executor"])
                    return
                if kind == "error":
                    raise NodeProcessError(f"node '{self.name}' failed to start: {payload}")
            elif not self.alive:
                break
        state = "hung" if self.alive else f"exited with status {self._process.returncode}"
        raise NodeProcessError(
            f"node '{self.name}' did not start within {timeout_s:g} s (its process {state}); "
            "its log above says why, or run the graph with --no-processes"
        )

    def poll(self) -> None:
        """Take in what the child reported since the last call."""
        try:
            while not self._closed and self._conn.poll():
                kind, payload = self._conn.recv()
                if kind in ("stats", "final"):
                    self._take(payload)
        except (EOFError, OSError):
            self._closed = True

    def _take(self, report: dict[str, Any]) -> None:
        self._stats = report["stats"]
        self.rss_mb = float(report["rss_mb"])
        self.peak_rss_mb = float(report["peak_rss_mb"])
        self.cpu_s = float(report["cpu_s"])

    @property
    def alive(self) -> bool:
        """Whether the child process is still running."""
        return self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it ended (negative: killed by that signal), else None."""
        return self._process.poll()

    def stats(self) -> dict[str, Any]:
        """The node's ``stats()`` as of its last report (empty for nodes without stats)."""
        return dict(self._stats)

    @property
    def finished(self) -> bool:
        """A bag player's "played to the end" (False for other nodes)."""
        return bool(self._stats.get("finished", False))

    @property
    def started(self) -> bool:
        """A bag player's "began to play" as of its last report (True for other nodes)."""
        return bool(self._stats.get("started", True))

    def get_parameter(self, name: str) -> SimpleNamespace:
        """The parameter's value at start, as ``.value`` (like ``Node.get_parameter``).

        Raises:
            KeyError: the node declared no such parameter.
        """
        if name not in self._parameters:
            raise KeyError(f"node '{self.name}' has no parameter '{name}'")
        return SimpleNamespace(value=self._parameters[name])

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask the child for its last stats and to exit; kill it if it does not."""
        if not self._closed:
            try:
                self._conn.send("stop")
            except (BrokenPipeError, OSError):
                self._closed = True
        deadline = time.monotonic() + timeout_s
        while not self._closed and time.monotonic() < deadline:
            if self._conn.poll(0.05):
                try:
                    kind, payload = self._conn.recv()
                except (EOFError, OSError):
                    break
                if kind in ("stats", "final"):
                    self._take(payload)
                if kind == "final":
                    break
            elif not self.alive:
                break
        try:
            self._process.wait(max(deadline - time.monotonic(), 0.5))
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5.0)
        self._conn.close()
        self._closed = True


if __name__ == "__main__":
    _node_main(Connection(int(sys.argv[1])))
