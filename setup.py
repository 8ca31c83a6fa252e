"""ament_python set-up of the iphd_bringup ROS 2 package (the iphd library lives in src/iphd)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "iphd_bringup"

setup(
    name=PACKAGE,
    version="0.1.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    # The shipped detector and re-ID weights live beside the code that loads them.
    package_data={"iphd": ["models/*.pt", "models/*.npz"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py") + glob("launch/*.yaml") + glob("launch/*.rviz")),
        (f"share/{PACKAGE}/calibration", glob("calibration/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="iphd developers",
    maintainer_email="iphd-dev@example.com",
    description="Person detection and tracking from depth + thermal cameras, without colour images.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "d435_node = iphd.ros.d435_node:main",
            "lepton_node = iphd.ros.lepton_node:main",
            "fusion_node = iphd.ros.fusion_node:main",
            "detector_node = iphd.ros.detector_node:main",
            "tracker_node = iphd.ros.tracker_node:main",
            "sim_source_node = iphd.ros.sim_source_node:main",
            "bag_player_node = iphd.ros.bag_player_node:main",
            "iphd-run = iphd.ros.runner:main",
            "iphd-sim = iphd.sim.cli:main",
            "iphd-calibrate = iphd.calib.cli:main",
            "iphd-eval = iphd.eval.cli:main",
            "calib_capture_node = iphd.ros.calib_capture_node:main",
        ],
    },
)
