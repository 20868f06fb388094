"""The Kubernetes tests' control plane (``tests/kube.py``), one per test session.

Without the binaries (``scripts/ci-setup-kube.sh`` builds them) the tests are skipped, or fail
when ``ZIXLY_REQUIRE_KUBE`` is set, as in CI.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from lightkube import AsyncClient, KubeConfig

from tests import kube


@pytest.fixture(scope="session")
def kube_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kube.KubeTestEnv]:
    missing = kube.missing_binaries()
    if missing:
        message = (
            f"the Kubernetes test control plane is not built ({', '.join(missing)} missing in "
            f"{kube.bin_dir()}): run scripts/ci-setup-kube.sh"
        )
        if os.environ.get("ZIXLY_REQUIRE_KUBE"):
            pytest.fail(message)
        pytest.skip(message)
    folder = Path(tmp_path_factory.mktemp("kube"))
    with kube.running(folder) as env:
        yield env


@pytest.fixture
async def kube_client(kube_env: kube.KubeTestEnv) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(
        config=KubeConfig.from_file(kube_env.kubeconfig), field_manager="zixly-tests"
    )
    try:
        yield client
    finally:
        await client.close()
