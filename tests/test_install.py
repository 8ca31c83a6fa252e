"""The package as a robot gets it: ``colcon build`` of iphd_bringup, run from its install folder.

The other tests import ``iphd`` from ``src/``; this one builds the ament_python package the way
the README's robot section does and runs it from the install tree, outside the repository, so
a node, tool, model or data file that only exists in the source tree fails here.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iphd.graph import build_graph

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("colcon_core") is None, reason="needs colcon"),
]
TOOLS = ("iphd-run", "iphd-sim", "iphd-eval", "iphd-calibrate", "calib_capture_node")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(install prefix of iphd_bringup, environment that runs it instead of src/)."""
    base = tmp_path_factory.mktemp("colcon")
    build = subprocess.run(
        [sys.executable, "-m", "colcon", "--log-base", str(base / "log"), "build",
         "--packages-select", "iphd_bringup", "--base-paths", str(ROOT / "ros2_ws" / "src"),
         "--build-base", str(base / "build"), "--install-base", str(base / "install")],
        cwd=base, capture_output=True, text=True, timeout=240,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    prefix = base / "install" / "iphd_bringup"
    python = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = prefix / "lib" / python / "site-packages"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), env.get("AMENT_PREFIX_PATH", "")])
    env["PATH"] = os.pathsep.join([str(prefix / "lib" / "iphd_bringup"), env["PATH"]])
    env["IPHD_CACHE_DIR"] = str(base / "cache")
    return prefix, env


def test_every_node_and_tool_is_installed_where_ros2_run_looks(installed):
    prefix, _env = installed
    wanted = set(TOOLS)
    for source, kwargs in (("live", {}), ("sim", {}), ("sim_live", {}), ("bag", {"bag": "b"})):
        wanted |= {spec.executable for spec in build_graph(source, **kwargs)}
    lib = prefix / "lib" / "iphd_bringup"
    missing = sorted(name for name in wanted if not os.access(lib / name, os.X_OK))
    assert not missing, f"not installed as executables in {lib}: {missing}"


def test_launch_calibration_and_models_are_installed(installed):
    prefix, _env = installed
    share = prefix / "share" / "iphd_bringup"
    for relative in ("package.xml", "launch/detect.launch.py", "launch/iphd_params.yaml",
                     "launch/iphd.rviz", "calibration/rig.yaml"):
        assert (share / relative).is_file(), relative
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    assert (index / "iphd_bringup").is_file()
    site_models = next(prefix.glob("lib/python*/site-packages/iphd/models"))
    shipped = sorted(p.name for p in (ROOT / "src" / "iphd" / "models").iterdir() if p.is_file())
    assert shipped and sorted(p.name for p in site_models.iterdir() if p.is_file()) == shipped


def test_the_installed_package_finds_its_own_files_outside_the_repository(installed, tmp_path):
    prefix, env = installed
    probe = (
        "import iphd, iphd.calibration as c\n"
        "from iphd.resources import package_file\n"
        "from iphd.detection.detector import SHIPPED_CHECKPOINT\n"
        "c.load_calibration()\n"
        "for p in (iphd.__file__, c.DEFAULT_CALIBRATION, package_file('launch/iphd_params.yaml'),"
        " SHIPPED_CHECKPOINT):\n"
        "    print(p)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    paths = [Path(line) for line in out.stdout.split()]
    assert len(paths) == 4
    for path in paths:
        assert path.is_relative_to(prefix), f"{path} is not from the install {prefix}"


def test_an_installed_tool_runs_on_the_installed_calibration(installed, tmp_path):
    _prefix, env = installed
    run = subprocess.run(["iphd-sim", "bag", "--out", str(tmp_path / "bag"), "--duration", "1",
                          "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "bag" / "metadata.yaml").is_file()


LAUNCH_PROBE = """
import importlib.util, json, sys, types

class Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]

# launch and launch_ros are not installable here: record what the file builds. The ament
# index is the real one, so the share folder comes from AMENT_PREFIX_PATH as under ros2 launch.
modules = {name: types.ModuleType(name) for name in
           ("launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions")}
modules["launch"].LaunchDescription = Recorder
modules["launch.actions"].DeclareLaunchArgument = Recorder
modules["launch.actions"].OpaqueFunction = Recorder
modules["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
modules["launch_ros.actions"].Node = Recorder
sys.modules.update(modules)
spec = importlib.util.spec_from_file_location("detect_launch", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
entities = module.generate_launch_description().args[0]
opaque = next(e for e in entities if "function" in e.kwargs)
context = {name: default for name, (default, _) in module.ARGUMENTS.items()}
context.update(source="live", rviz="true")
for node in opaque.kwargs["function"](context):
    print(json.dumps({"package": node.kwargs["package"], "executable": node.kwargs["executable"],
                      "parameters": [p for p in node.kwargs["parameters"] if isinstance(p, str)],
                      "arguments": node.kwargs.get("arguments", [])}))
"""


def test_the_installed_launch_file_names_installed_executables_and_files(installed, tmp_path):
    prefix, env = installed
    share = prefix / "share" / "iphd_bringup"
    run = subprocess.run([sys.executable, "-c", LAUNCH_PROBE, str(share / "launch" /
                          "detect.launch.py")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    nodes = [json.loads(line) for line in run.stdout.splitlines()]
    ours = [n for n in nodes if n["package"] == "iphd_bringup"]
    assert [n["executable"] for n in ours] == [s.executable for s in build_graph("live")]
    for node in ours:
        assert os.access(prefix / "lib" / "iphd_bringup" / node["executable"], os.X_OK)
        assert node["parameters"] == [str(share / "launch" / "iphd_params.yaml")]
    rviz = next(n for n in nodes if n["package"] == "rviz2")
    # In the calibration's depth frame, read from the install's nominal rig.yaml.
    assert rviz["arguments"] == [
        "-d", str(share / "launch" / "iphd.rviz"), "-f", "depth_optical_frame"
    ]
