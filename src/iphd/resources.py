"""Files the package ships outside its Python code: rig calibration, parameters, launch, RViz.

They live at the top of the source tree (``calibration/rig.yaml``, ``launch/...``) and are
installed by ``setup.py``'s ``data_files`` to ``<prefix>/share/iphd_bringup/`` (colcon on a
robot, ``pip install .`` into a virtual environment). The code that needs them runs from
either place, so it looks in both: beside the source tree, in the share folder of the prefix
the running ``iphd`` package was installed into, and in the share folders the ament index
knows (``AMENT_PREFIX_PATH``, for an overlay that installs the package elsewhere).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = "iphd_bringup"
#: The ``iphd`` package folder (``src/iphd`` in the source tree, ``.../site-packages/iphd``
#: when installed).
PACKAGE_DIR = Path(__file__).resolve().parent


def candidate_paths(relative: str, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Where ``relative`` (e.g. ``"calibration/rig.yaml"``) may be, in the order looked at.

    1. The source tree: ``src/iphd`` -> the repository root.
    2. The install prefix: ``<prefix>/lib/pythonX.Y/site-packages/iphd`` ->
       ``<prefix>/share/iphd_bringup`` (colcon's isolated and merged installs, a venv, pip
       ``--user`` and ``/usr/local`` all have this shape).
    3. ``share/iphd_bringup`` of every prefix in ``AMENT_PREFIX_PATH`` (ament index).
    """
    candidates = []
    if package_dir.parent.name == "src":
        candidates.append(package_dir.parent.parent / relative)
    parents = package_dir.parents
    if len(parents) > 3 and parents[2].name == "lib":
        candidates.append(parents[3] / "share" / PACKAGE / relative)
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return candidates
    try:
        share = Path(get_package_share_directory(PACKAGE))
    except (PackageNotFoundError, OSError, ValueError):  # OSError: AMENT_PREFIX_PATH unset
        return candidates
    if share / relative not in candidates:
        candidates.append(share / relative)
    return candidates


def find_package_file(relative: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The first of ``candidate_paths`` that is a file, or None."""
    for path in candidate_paths(relative, package_dir):
        if path.is_file():
            return path
    return None


def package_file(relative: str, package_dir: Path = PACKAGE_DIR) -> Path:
    """Return a file shipped with the package (``relative`` to the source tree's root).

    Raises:
        FileNotFoundError: naming every place looked at and what to do.
    """
    found = find_package_file(relative, package_dir)
    if found is not None:
        return found
    places = ", ".join(str(c) for c in candidate_paths(relative, package_dir)) or "nowhere"
    raise FileNotFoundError(
        f"{relative} is not installed with the iphd package (looked in {places}); run from "
        "the source tree, or rebuild and source the workspace (colcon build && source "
        "install/setup.bash), or pip install the repository (not only its src/ folder)"
    )
