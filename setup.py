"""ament_python package setup: works with `colcon build` on a robot and `pip install -e .` standalone."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE_NAME = "threed_llm_ros"


def files_under(pattern: str) -> list[str]:
    """Regular files matching ``pattern`` (a directory in data_files fails the install: "not a regular file")."""
    return sorted(path for path in glob(pattern, recursive=True) if os.path.isfile(path))


def model_data_files() -> list[tuple[str, list[str]]]:
    """Install each shipped checkpoint directory under share/<package>/models/<name>; not the git-ignored
    export caches (``models/<name>/onnx/``: the ONNX graphs made on first use or by `make lm-export`)."""
    entries: dict[str, list[str]] = {}
    for path in files_under("models/**/*"):
        if "/" in path and not path.endswith("__pycache__") and "/onnx/" not in path:
            directory = path.rsplit("/", 1)[0]
            entries.setdefault(f"share/{PACKAGE_NAME}/{directory}", []).append(path)
    return sorted(entries.items())


setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
        (f"share/{PACKAGE_NAME}", ["package.xml"]),
        (f"share/{PACKAGE_NAME}/launch", files_under("launch/*.launch.py")),
        (f"share/{PACKAGE_NAME}/config", files_under("config/*.yaml") + files_under("config/*.xml")
         + files_under("config/*.json") + files_under("config/*.rviz")),
        (f"share/{PACKAGE_NAME}/msg", files_under("msg/*.msg")),
        (f"share/{PACKAGE_NAME}/srv", files_under("srv/*.srv")),
        (f"share/{PACKAGE_NAME}/action", files_under("action/*.action")),
        *model_data_files(),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="threed_llm_ros maintainers",
    maintainer_email="maintainers@threed-llm-ros.invalid",
    description="A 3D large language model for robots: captions, answers, 3D grounding and plans from point clouds.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "threed-llm = threed_llm_ros.cli:main",
            "scene_sim_node = threed_llm_ros.ros.scene_sim_node:main",
            "threed_llm_node = threed_llm_ros.ros.threed_llm_node:main",
            "mono3d_node = threed_llm_ros.ros.mono3d_node:main",
            "prompt_client = threed_llm_ros.ros.prompt_client:main",
        ],
    },
)
