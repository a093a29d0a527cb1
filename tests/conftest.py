import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from clipbranches_widget.engine.synthetic import clustered_codes  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def clustered():
    """50k synthetic clustered codes with a 3-cluster concept."""
    codes, cluster, concept = clustered_codes(50_000, spread=4.0, random_state=7)
    return codes, cluster, concept
