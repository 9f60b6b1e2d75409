"""Shared fixtures: tiny models built locally once per test session (no downloads)."""

import pytest

from scorealign.core.models import quiet_transformers
from scorealign.core.tiny import build_tiny_model

quiet_transformers()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Build (once) a tiny random-weight model of ``arch``; returns its directory."""
    built = {}

    def get(arch: str = "llama", hidden: int = 32) -> str:
        key = (arch, hidden)
        if key not in built:
            built[key] = str(build_tiny_model(tmp_path_factory.mktemp(f"tiny_{arch}"), arch=arch,
                                              hidden=hidden))
        return built[key]

    return get
