"""Shared test setup: DDS isolation, real-data location, markers."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

# Keep DDS traffic on this machine and away from other test runs sharing it: a random
# domain per pytest session (child processes inherit it) and loopback-only discovery.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent


def _realdata_directory() -> Path | None:
    override = os.environ.get("THREED_LLM_REALDATA")
    candidates = [Path(override)] if override else []
    candidates += [REPO_ROOT.parent / "shared" / "realdata", REPO_ROOT / "shared" / "realdata"]
    for candidate in candidates:
        if (candidate / "SOURCES.md").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def realdata() -> Path:
    """Directory of the real sensor recordings (../shared/realdata); skips where absent."""
    directory = _realdata_directory()
    if directory is None:
        pytest.skip("real sensor data not found: set THREED_LLM_REALDATA to shared/realdata")
    return directory


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (model, tokenizer), loaded once per session.

    The first load dequantises the GGUF (~15 s) and caches it; later loads in the session
    (each ThreeDLLM builds its own, since it modifies the model) read the cache in < 1 s.
    Treat the returned pair as read-only.
    """
    from threed_llm_ros.model.language_model import load_language_model

    return load_language_model()
