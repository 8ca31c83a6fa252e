import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROS_MODULES = (
    "rclpy",
    "sensor_msgs",
    "std_msgs",
    "geometry_msgs",
    "visualization_msgs",
    "diagnostic_msgs",
    "iphd_msgs",
    "builtin_interfaces",
    "tf2_msgs",
    "rcl_interfaces",
)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_library_outside_ros_package_imports_no_ros():
    offenders = []
    for path in (ROOT / "src" / "iphd").rglob("*.py"):
        if "ros" in path.relative_to(ROOT / "src" / "iphd").parts[:1]:
            continue
        bad = _imports(path) & set(ROS_MODULES)
        if bad:
            offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert not offenders, "ROS imports outside src/iphd/ros/:\n" + "\n".join(offenders)


def test_every_console_script_points_at_an_existing_main():
    setup = (ROOT / "setup.py").read_text()
    tree = ast.parse(setup)
    scripts = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and " = iphd." in node.value
    ]
    assert scripts
    for entry in scripts:
        _name, target = (s.strip() for s in entry.split("="))
        module, func = target.split(":")
        path = ROOT / "src" / (module.replace(".", "/") + ".py")
        assert path.is_file(), entry
        functions = {
            n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)
        }
        assert func in functions, entry
