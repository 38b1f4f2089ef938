"""Shared fixtures: the real data in ``../shared/data`` (skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """Path inside ``../shared/data``; skips the calling test when that file is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"real data {path} is absent: these tests need the workplace's ../shared/data "
            "folder beside the repository (see ../shared/data/README.md)"
        )
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ``../shared/data``; skips when the folder is absent."""
    return shared_path()


def drosophila_subset():
    """BDTNP atlas (every 4th location) + the Karaiskos reference restricted to 300 genes (84 shared)."""
    import anndata as ad

    st = ad.read_h5ad(shared_path("drosophila", "bdtnp_insitu.h5ad"))[::4].copy()
    ref = ad.read_h5ad(shared_path("drosophila", "karaiskos_scrna.h5ad"))
    extra = [g for g in ref.var_names if g not in set(st.var_names)][:216]
    return st, ref[:, list(st.var_names) + extra].copy()
