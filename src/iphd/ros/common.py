"""Helpers shared by the iphd nodes: parameters, package files, rate meters, diagnostics."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.context import Context
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from iphd.errors import ConfigError, IphdError
from iphd.resources import package_file  # noqa: F401 - re-exported for the nodes

LEVELS = {"OK": DiagnosticStatus.OK, "WARN": DiagnosticStatus.WARN, "ERROR": DiagnosticStatus.ERROR}
# A sensor stream counts as stopped after this long without a message. Diagnostics check their
# level every WATCH_PERIOD_S and publish at once when it changes, so a stop shows as ERROR
# within STREAM_TIMEOUT_S + WATCH_PERIOD_S (under 1 s) of the last message, whatever the period.
STREAM_TIMEOUT_S = 0.6
WATCH_PERIOD_S = 0.1
# This many thermal-rate frames in a row without their partner (about 1 s of the Lepton's
# 8.7 Hz) mean the pairing is not working, not a frame lost: fusion, detector and tracker say so.
UNPAIRED_RUN = 9
# At most one warning per kind of dropped input in this period (the diagnostics count them all).
DROP_WARNING_PERIOD_S = 5.0
# Dropped input keeps a node's status at WARN this long after the last drop (the counts stay).
INPUT_ERROR_WINDOW_S = 30.0
# At most one "stamps jumped backwards" warning per node in this period: a bag loop is logged
# each time, two publishers on one topic with clocks apart do not flood the log.
RESET_WARNING_PERIOD_S = 1.0
#: What makes stamps jump backwards, for the warning.
RESET_CAUSES = (
    "bag loop or driver restart; again and again: two publishers on these topics, with clocks "
    "apart"
)


def topic_label(node: Node, name: str) -> str:
    """How a message names the node's topic ``name``: as it is, or remapped and then ``name``.

    A node started with ``depth_topic:=/camera/camera/depth/image_rect_raw`` says "no
    /camera/camera/depth/image_rect_raw (depth/image_raw) for over 1 s", the topic to look at.
    """
    try:
        resolved = node.resolve_topic_name(name)
        expanded = node.resolve_topic_name(name, only_expand=True)
    except Exception:  # noqa: BLE001 - a label must never break the message it goes into
        return name
    return name if resolved == expanded else f"{resolved} ({name})"


def declare(
    node: Node, name: str, default: Any, description: str, *, dynamic: bool = False
) -> Any:
    """Declare a parameter with a description and return its value.

    A parameter is read once, at start, unless ``dynamic``: the others are declared read-only,
    so ``ros2 param set`` refuses them ("Trying to set a read-only parameter") instead of
    storing a value the node never reads. A parameters file or ``-p`` still sets them at start.
    A dynamic parameter's changes reach the node through ``on_parameters_set``.
    """
    try:
        node.declare_parameter(
            name, default, ParameterDescriptor(description=description, read_only=not dynamic)
        )
    except InvalidParameterTypeException as exc:
        raise ConfigError(_type_problem(name, default, exc)) from exc
    return node.get_parameter(name).value


def _type_problem(name: str, default: Any, exc: Exception) -> str:
    """Why a parameter's value was refused for its type, and how to write it."""
    kinds = {bool: "true or false", int: "a whole number", float: "a number with a decimal "
             "point", str: "a string"}
    kind = kinds.get(type(default), f"a {type(default).__name__}")
    hint = (" (a whole number needs one too: 2.0, not 2)" if isinstance(default, float)
            else " (quote one that looks like a number: '2', not 2)" if isinstance(default, str)
            else "")
    return (
        f"parameter '{name}' must be {kind}{hint}, like its default {default!r}; fix it in the "
        f"parameters file or the -p / launch argument that sets it ({exc})"
    )


def on_parameters_set(
    node: Node, names: Collection[str], apply: Callable[[dict[str, Any]], None]
) -> None:
    """Apply run-time changes (``ros2 param set``) of a node's dynamic parameters, or refuse them.

    ``apply`` gets the new values of those of ``names`` in one set request (parameters set
    together are applied together) and raises ``IphdError`` when it cannot use them: then
    nothing changes, the request fails with that reason and the node logs it. Changes of
    other parameters (``use_sim_time``) pass through untouched. Register it after the node's
    last ``declare``: rclpy runs these callbacks for declarations too.
    """
    wanted = frozenset(names)

    def callback(parameters: list[Parameter[Any]]) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters if p.name in wanted}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            apply(changes)
        except IphdError as exc:
            node.get_logger().warning(f"parameters not changed: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - a bad value must not take the node down
            reason = f"{type(exc).__name__}: {exc}"
            node.get_logger().error(f"parameters not changed, unexpected error: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        node.get_logger().info(
            "parameters changed: " + ", ".join(f"{k} = {v!r}" for k, v in changes.items())
        )
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(callback)


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


def diagnostics_period(value: Any) -> float:
    """The ``diagnostics_period`` parameter, checked: a finite number of seconds above 0.

    Raises:
        ConfigError: 0 would publish as fast as the executor spins, a negative period or NaN
            fails in rcl's timer with a bare traceback.
    """
    period = float(value)
    if not (period > 0 and period != float("inf")):
        raise ConfigError(
            f"diagnostics_period must be a number of seconds above 0, got {value!r} (1.0 is "
            "the default)"
        )
    return period


#: An ERROR a node reports from its start is logged once it lasts this long (seconds).
STARTUP_LOG_GRACE_S = 10.0
#: An ERROR is logged once it lasted this long (seconds): shorter ones are on /diagnostics only,
#: such as the thermal pause of each Lepton flat-field correction (about 1 s, every few minutes).
ERROR_LOG_AFTER_S = 1.5


class DiagnosticsReporter:
    """Publishes a node's one-status ``/diagnostics`` every ``period_s`` and on level changes.

    ``status(values)`` turns the node's ``stats()`` into ``(level, message)``; it is evaluated
    every ``WATCH_PERIOD_S`` so a stopped stream (ERROR) or its return (OK) is reported at once
    instead of at the next period. Both timers run on the steady clock: with ``use_sim_time``
    the report goes on while ``/clock`` stops or jumps back (a paused or looping bag).
    """

    def __init__(
        self,
        node: Node,
        name: str,
        period_s: float,
        stats: Callable[[], dict[str, Any]],
        status: Callable[[dict[str, Any]], tuple[str, str]],
    ) -> None:
        period_s = diagnostics_period(period_s)
        self._node = node
        self._name = name
        self._stats = stats
        self._status = status
        self.level: str | None = None
        self._started = time.monotonic()
        self._logged_error = False
        self._error_since = 0.0
        self._error_after_working = False
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._clock = Clock(clock_type=ClockType.STEADY_TIME)
        node.create_timer(period_s, self.publish, clock=self._clock)
        node.create_timer(WATCH_PERIOD_S, self._watch, clock=self._clock)

    def publish(self) -> None:
        """Publish the current status now; entering and leaving ERROR also goes to the log.

        Where no one echoes ``/diagnostics`` (a robot's console, a launch log), what stops a
        node (a stream gone silent, a model that did not load) is then in its log as well.
        """
        values = self._stats()
        level, message = self._status(values)
        now = time.monotonic()
        if level == "ERROR" and self.level != "ERROR":
            self._error_since = now
            self._error_after_working = self.level in ("OK", "WARN")
        if level == "ERROR" and not self._logged_error:
            # Streams start after the node: an ERROR of the first seconds is only logged if it
            # lasts, or once the node had been working; a blip (ERROR_LOG_AFTER_S) never is.
            working = self._error_after_working or now - self._started > STARTUP_LOG_GRACE_S
            if working and now - self._error_since >= ERROR_LOG_AFTER_S:
                self._node.get_logger().error(f"status ERROR: {message}")
                self._logged_error = True
        elif level != "ERROR" and self._logged_error:
            self._node.get_logger().info(f"status {level} again: {message}")
            self._logged_error = False
        self.level = level
        self._pub.publish(diagnostic_array(self._node, self._name, level, message, values))

    def _watch(self) -> None:
        if self._status(self._stats())[0] != self.level:
            self.publish()


def no_camera_info(node: Node, topic: str, rejected: str) -> str:
    """Why ``node`` has no camera info on ``topic``: none came, or the last was ``rejected``.

    A driver without its calibration (an all-zero K) sends infos that are all refused; saying
    "none received" would send the user to the topic name and QoS instead.
    """
    label = topic_label(node, topic)
    if rejected:
        return f"{label} received but rejected: {rejected}"
    return f"no {label} received (check the topic name and QoS)"


class HeldForInfo:
    """Images that came before the first camera info, held until it comes.

    Image and camera info travel on separate topics, so a node's first images often beat their
    info (always when its executor was busy as the stream started). Holding the newest ``keep``
    of them loses none of a normal start; ``dropped`` counts what a lasting absence pushed out.
    """

    def __init__(self, keep: int = 30) -> None:
        self.keep = keep
        self.dropped = 0
        self._held: deque[Any] = deque()

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, msg: Any) -> None:
        """Keep ``msg``; beyond ``keep`` the oldest held message is dropped and counted."""
        if len(self._held) >= self.keep:
            self._held.popleft()
            self.dropped += 1
        self._held.append(msg)

    def release(self) -> list[Any]:
        """Return the held messages, oldest first, and hold nothing more."""
        held = list(self._held)
        self._held.clear()
        return held


class DropWarnings:
    """Logs a warning for dropped input at most once per kind every ``period_s``.

    Throttling per kind (not per call site, as rclpy's ``throttle_duration_sec`` does) keeps a
    flood of one kind of bad message from hiding another kind.
    """

    def __init__(self, node: Node, period_s: float = DROP_WARNING_PERIOD_S) -> None:
        self._logger = node.get_logger()
        self._period_s = period_s
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}
        self.last_drop_s = -float("inf")

    def current(self, errors: Mapping[str, int], window_s: float = INPUT_ERROR_WINDOW_S) -> bool:
        """Whether ``errors`` (a node's input errors by kind) still make its status WARN.

        Kinds counted here are messages dropped one by one: they do until ``window_s`` after
        the last drop, so one bad message does not leave a node at WARN for good. Any other
        kind is a standing problem (a camera_info that does not match the calibration, images
        in another frame than the calibration's) and does for good.
        """
        kinds = list(errors)  # one step under the GIL: other threads may add kinds
        if any(kind not in self._since for kind in kinds):
            return True
        return bool(kinds) and time.monotonic() - self.last_drop_s <= window_s

    def passed(self, kind: str) -> None:
        """Count one dropped input of ``kind`` that the caller logged itself.

        An internal error costs one frame and is logged at ERROR where it is caught; counted
        here it keeps the node at WARN for the window after it, not for good.
        """
        self.last_drop_s = time.monotonic()
        self._since.setdefault(kind, 0)

    def __call__(self, kind: str, message: str) -> None:
        """Count one dropped input of ``kind``; log ``message`` unless one was logged lately."""
        now = time.monotonic()
        self.last_drop_s = now
        self._since[kind] = self._since.get(kind, 0) + 1
        last = self._last.get(kind)
        if last is not None and now - last < self._period_s:
            return
        hidden = self._since[kind] - 1
        self._last[kind] = now
        self._since[kind] = 0
        note = f" ({hidden} more of this kind since the last warning)" if hidden else ""
        self._logger.warning(message + note)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _stamp_header(node: Node):  # noqa: ANN202 - std_msgs Header
    from std_msgs.msg import Header

    return Header(stamp=node.get_clock().now().to_msg())


#: Environment variable that picks the executor every iphd process spins (see make_executor).
EXECUTOR_ENV = "IPHD_EXECUTOR"
EXECUTORS = ("auto", "events", "single")


def make_executor(context: Context | None = None) -> Executor:
    """The executor an iphd process spins its nodes with, as ``IPHD_EXECUTOR`` asks.

    ``auto`` (unset) and ``events`` take rclpy's events executor (C++, in
    ``rclpy.experimental`` from ROS 2 Kilted on, and in Jazzy since rclpy 7.1.4): it
    dispatches each callback as its event arrives instead of rebuilding a Python wait set on
    every wake-up, which cost the demo graph a quarter to a third of its CPU (README,
    Benchmarks). ``auto`` falls back to the ``SingleThreadedExecutor`` where rclpy has no
    events executor (Jazzy before rclpy 7.1.4); ``single`` always takes it.

    Raises:
        ConfigError: ``IPHD_EXECUTOR`` is not one of ``auto``, ``events``, ``single``, or is
            ``events`` on an rclpy without the events executor.
    """
    choice = os.environ.get(EXECUTOR_ENV, "").strip().lower() or "auto"
    if choice not in EXECUTORS:
        raise ConfigError(
            f"{EXECUTOR_ENV}={choice!r} is not an executor: use one of {', '.join(EXECUTORS)} "
            "(or leave it unset for auto)"
        )
    if choice != "single":
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError:
            if choice == "events":
                raise ConfigError(
                    f"{EXECUTOR_ENV}=events needs rclpy's events executor (ROS 2 Kilted, or "
                    "Jazzy with rclpy 7.1.4 or later); this rclpy has none: unset it or set it "
                    "to single"
                ) from None
        else:
            return _with_stderr_file(lambda: EventsExecutor(context=context))
    return SingleThreadedExecutor(context=context)


def _with_stderr_file(build: Callable[[], Executor]) -> Executor:
    """Run ``build`` with a ``sys.stderr`` that has a file descriptor.

    rclpy's events executor enables ``faulthandler`` on ``sys.stderr``, which fails where that
    is not a real file (pytest's capture, some IDE consoles); the process's own stderr is used
    then.
    """
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        saved, sys.stderr = sys.stderr, sys.__stderr__
        try:
            return build()
        finally:
            sys.stderr = saved
    return build()


class CallbackGuard:
    """Spins an executor once, and keeps spinning when a callback raises.

    rclpy hands a callback's exception out of ``spin_once``, which ended the node's process: a
    bug met by one message took the whole node down, under ``ros2 launch`` for good. Here the
    message is dropped and the error logged (with its traceback the first time an error type
    is raised at a place, then once every 5 s) and counted in ``errors``; the node goes on.
    With the events executor, another message of the same topic that was already waiting may
    be lost with it.
    """

    def __init__(self, log: Callable[[str], object]) -> None:
        self._log = log
        self._seen: set[str] = set()
        self._last_log = 0.0
        self.errors = 0

    def spin_once(self, executor: Executor, timeout_sec: float) -> None:
        """``executor.spin_once(timeout_sec)``, logging and counting a callback's exception."""
        try:
            executor.spin_once(timeout_sec=timeout_sec)
        except (KeyboardInterrupt, ExternalShutdownException):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad message must not end the node
            self.errors += 1
            # The same error is the same type raised at the same place: its message may carry
            # a stamp that differs on every message.
            where = traceback.extract_tb(exc.__traceback__)[-1]
            kind = f"{type(exc).__name__} at {where.filename}:{where.lineno}"
            now = time.monotonic()
            if kind not in self._seen:
                self._seen.add(kind)
                self._log(
                    f"a callback failed ({type(exc).__name__}: {exc}); its message is dropped "
                    f"and the node goes on; please report it with this log:\n"
                    f"{traceback.format_exc()}"
                )
                self._last_log = now
            elif now - self._last_log >= DROP_WARNING_PERIOD_S:
                self._log(
                    f"a callback failed again ({type(exc).__name__}: {exc}; {self.errors} in all)"
                )
                self._last_log = now


def warn_unknown_parameters(node: Node, argv: Sequence[str]) -> list[str]:
    """Warn of what the ``--params-file`` files in ``argv`` give ``node`` that it does not have.

    As ``ros2 launch`` and ``ros2 run`` start a node: rcl reads the files and the node ignores
    the parameters it does not declare, silently. A file that does not read is left to rcl,
    which has already said why. Returns the warnings.
    """
    from iphd.graph import load_params_file, unknown_parameters

    files = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--params-file"]
    declared = node.get_parameters_by_prefix("")
    messages: list[str] = []
    for path in files:
        try:
            params = load_params_file(path)
        except ConfigError:
            continue
        messages += unknown_parameters(params, node.get_name(), node.get_namespace(), declared)
    for message in messages:
        node.get_logger().warning(message)
    return messages


def spin_node(
    factory: Callable[[], Node],
    args: list[str] | None = None,
    done: Callable[[Node], bool] | None = None,
) -> None:
    """Create a node with ``factory`` and spin it until Ctrl-C or shutdown (console-script main).

    Args:
        factory: builds the node (rclpy is initialised first; shut down again if it raises).
            An ``IphdError`` it raises (or a bad ``IPHD_EXECUTOR``) is printed without a
            traceback and ends the process with status 2.
        args: command-line arguments for ``rclpy.init``.
        done: when given, spinning also ends once ``done(node)`` is true.
    """
    rclpy.init(args=args)
    try:
        executor = make_executor()
        node = factory()
    except IphdError as exc:  # bad parameters, files or IPHD_EXECUTOR: say so, no traceback
        rclpy.try_shutdown()
        name = getattr(factory, "__name__", "node")
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except BaseException:
        rclpy.try_shutdown()
        raise
    warn_unknown_parameters(node, sys.argv if args is None else args)
    executor.add_node(node)
    guard = CallbackGuard(node.get_logger().error)
    try:
        # Not executor.spin(): after Ctrl-C shuts the context down, rclpy's events executor
        # (Kilted) keeps spinning a core instead of returning. rclpy.ok() ends this loop.
        while rclpy.ok() and (done is None or not done(node)):
            guard.spin_once(executor, 0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        close = getattr(node, "close", None)
        if callable(close):
            close()
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()


class _RosLogHandler(logging.Handler):
    """Sends records of the library's ``logging`` loggers to a node's ROS logger."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self._logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.ERROR:
            self._logger.error(message)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(message)
        elif record.levelno >= logging.INFO:
            self._logger.info(message)
        else:
            self._logger.debug(message)


def forward_library_logs(node: Node, logger_name: str) -> Callable[[], None]:
    """Route ``logging`` records of ``logger_name`` to ``node``'s ROS logger; return an undo.

    The records stop there: a root handler (flirpy's camera calls ``logging.basicConfig``)
    would print each of them a second time, in another format.
    """
    handler = _RosLogHandler(node)
    library_logger = logging.getLogger(logger_name)
    propagate = library_logger.propagate
    library_logger.addHandler(handler)
    library_logger.setLevel(logging.DEBUG)
    library_logger.propagate = False

    def undo() -> None:
        library_logger.removeHandler(handler)
        library_logger.propagate = propagate

    return undo


class LoopStoppedError(Exception):
    """Raised inside a frame source's back-off sleep when its ``FrameLoop`` stops."""


class FrameLoop:
    """Runs a blocking frame source in a thread until stopped (used by the driver nodes).

    ``source()`` returns an iterator of frames (it may block, retry and back off; its sleeps
    should use ``wait`` so that ``stop`` interrupts them). Each frame goes to ``on_frame``. When
    the iterator raises an ``IphdError`` the loop logs it and starts again after
    ``retry_s``, so a node survives a misconfigured or unplugged sensor and recovers once it is
    fixed. When the iterator ends (a recording is exhausted), the loop ends.
    """

    def __init__(
        self,
        node: Node,
        source: Callable[[], Iterator[Any]],
        on_frame: Callable[[Any], None],
        retry_s: float = 5.0,
    ) -> None:
        self._node = node
        self._source = source
        self._on_frame = on_frame
        self._retry_s = retry_s
        self._stop = threading.Event()
        self.last_error = ""
        self.last_error_s = 0.0
        self.finished = False
        self._thread = threading.Thread(
            target=self._run, name=f"{node.get_name()}_frames", daemon=True
        )

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds`` (the drivers' back-off sleep).

        Raises:
            LoopStoppedError: when ``stop`` is called meanwhile, so a source retrying
                forever without yielding a frame still ends.
        """
        if self._stop.wait(seconds):
            raise LoopStoppedError

    @property
    def stopping(self) -> bool:
        """True once ``stop`` was called."""
        return self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for frame in self._source():
                    if self._stop.is_set():
                        return
                    self.last_error = ""  # a frame came: the error is over
                    self._on_frame(frame)
                self.finished = True
                return
            except LoopStoppedError:
                return
            except IphdError as exc:
                self.last_error, self.last_error_s = str(exc), time.monotonic()
                self._node.get_logger().error(f"{exc} (retrying in {self._retry_s:.0f} s)")
                self._stop.wait(self._retry_s)

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop the thread and wait up to ``timeout_s`` for it to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
