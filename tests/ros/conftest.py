"""Fixtures for tests that run real rclpy nodes (in-process, on a private DDS domain)."""

import contextlib
import time
from collections.abc import Callable

import pytest

try:
    import iphd_msgs.msg  # noqa: F401
    import rclpy
    from rclpy.context import Context
except ImportError as exc:  # pragma: no cover - environment problem, not a test result
    raise RuntimeError(
        f"ROS tests need rclpy and the colcon-built iphd_msgs ({exc}); run them with `make test`, "
        "which sets up the environment through scripts/env.sh"
    ) from exc


@pytest.fixture(scope="session", autouse=True)
def _shipped_model_exports():
    """Build the shipped models' cached exports once, before any node starts.

    A node's first start on the CPU exports its models to ONNX and quantizes the detector
    (seconds, once per cache folder); the tests that run a graph for a set time should spend
    it running, not building those.
    """
    from iphd.detections import DetectionConfig, load_detector
    from iphd.tracking.appearance import load_extractor

    load_detector(DetectionConfig(device="cpu"))
    for modality in ("depth", "rgb"):
        load_extractor("", modality, "cpu", "auto")


@pytest.fixture
def ros_context():
    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture
def executor(ros_context):
    """The executor the product spins its nodes with (IPHD_EXECUTOR, events where rclpy has it)."""
    from iphd.ros.common import make_executor

    ex = make_executor(ros_context)
    yield ex
    for node in list(ex.get_nodes()):
        ex.remove_node(node)
        node.destroy_node()
    ex.shutdown()


def _spin_until(executor, predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Spin ``executor`` until ``predicate()`` holds or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.02)
    return predicate()


def _spin_for(executor, seconds: float) -> None:
    """Spin ``executor`` for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.02)


@pytest.fixture
def spin_until():
    return _spin_until


@pytest.fixture
def spin_for():
    return _spin_for


@pytest.fixture
def spin_until_logged(capfd):
    """``(executor, text) -> stderr so far`` once a node has logged ``text`` (asserted)."""

    def wait(executor, text: str) -> str:
        seen: list[str] = []
        assert _spin_until(
            executor, lambda: seen.append(capfd.readouterr().err) or text in "".join(seen)
        ), f"nothing logged {text!r}"
        return "".join(seen)

    return wait


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory):
    """A small untrained detector that scores everything: every pair gives 8 detections."""
    import torch

    from iphd.detection.detector import save_checkpoint
    from iphd.detection.model import DetectorConfig, FusionDetector
    from iphd.normalize import NormalizeConfig

    torch.manual_seed(0)
    model = FusionDetector(
        DetectorConfig(
            backbone_depth=18, backbone_width=8, head_channels=8, input_size=(64, 112),
            # A handful of boxes per pair, as a trained detector gives, keeps the graph at rate.
            score_threshold=0.0, max_detections=8, pre_nms_top_k=200,
        )
    )
    return save_checkpoint(
        tmp_path_factory.mktemp("model") / "tiny.pt", model, NormalizeConfig(out_size=(112, 64))
    )


@pytest.fixture
def set_remote_parameters():
    """``(executor, client_node, node_name, **values) -> SetParametersResult``.

    Sets ``values`` on the node named ``node_name`` through its parameter services in one
    atomic request (all or none). With ``one_by_one=True`` they go as ``ros2 param set`` and
    ``ros2 param load`` send them, each set on its own, and the list of results comes back.
    """
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    def call(executor, client_node, node_name: str, one_by_one=False, **values):
        client = AsyncParameterClient(client_node, node_name)
        ready = _spin_until(executor, client.services_are_ready)
        assert ready, f"no parameter services on {node_name}"
        parameters = [Parameter(k, value=v) for k, v in values.items()]
        if one_by_one:
            future = client.set_parameters(parameters)
        else:
            future = client.set_parameters_atomically(parameters)
        assert _spin_until(executor, future.done), f"{node_name} did not answer"
        response = future.result()
        return response.results if one_by_one else response.result

    return call


@pytest.fixture(scope="session")
def _standin_build(tmp_path_factory):
    """The test stand-ins of tests/ros/standin (vision_msgs, tf2_msgs), colcon-built once.

    Returns the install base (one prefix per package under it).
    """
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    if importlib.util.find_spec("colcon_core") is None:
        pytest.skip("needs colcon to build the interface stand-ins")
    base = tmp_path_factory.mktemp("standin")
    build = subprocess.run(
        [sys.executable, "-m", "colcon", "--log-base", str(base / "log"), "build",
         "--base-paths", str(Path(__file__).parent / "standin"),
         "--build-base", str(base / "build"), "--install-base", str(base / "install")],
        cwd=base, capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return base / "install"


@contextlib.contextmanager
def _interfaces(request, package: str):
    """``<package>.msg``: the installed one where there is one (ROS from apt), else the stand-in.

    The stand-in's C libraries are loaded by path (the process started without them on
    LD_LIBRARY_PATH); afterwards its modules are forgotten again, so other tests do not see it.
    """
    import ctypes
    import importlib
    import importlib.util
    import sys

    if importlib.util.find_spec(package) is not None:
        yield importlib.import_module(f"{package}.msg")
        return
    prefix = request.getfixturevalue("_standin_build") / package
    pending = sorted((prefix / "lib").glob("*.so"))
    for _ in range(len(pending)):  # in dependency order, whatever the names sort to
        left = []
        for lib in pending:
            try:
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                left.append(lib)
        pending = left
    assert not pending, f"could not load {pending}"
    site = str(next((prefix / "lib").glob("python*/site-packages")))
    sys.path.insert(0, site)
    try:
        yield importlib.import_module(f"{package}.msg")
    finally:
        sys.path.remove(site)
        for name in [n for n in sys.modules if n == package or n.startswith(f"{package}.")]:
            del sys.modules[name]


@pytest.fixture
def vision_msgs(request):
    """``vision_msgs.msg`` for one test, as where ros-<distro>-vision-msgs is installed."""
    with _interfaces(request, "vision_msgs") as module:
        yield module


@pytest.fixture
def tf2_msgs(request):
    """``tf2_msgs.msg`` for one test, as where ROS from apt is installed."""
    with _interfaces(request, "tf2_msgs") as module:
        yield module


@pytest.fixture
def break_once():
    """``(node, method, at) -> calls``: the node's ``method`` raises KeyError on call ``at``.

    Every call (the broken one included) is recorded in the returned list; the others run the
    real method. For the worker threads' last-resort handlers.
    """

    def install(node, method: str, at: int) -> list:
        real = getattr(node, method)
        calls: list = []

        def broken(*args, **kwargs):
            calls.append(args)
            if len(calls) == at:
                raise KeyError("a bug")
            return real(*args, **kwargs)

        setattr(node, method, broken)
        return calls

    return install
