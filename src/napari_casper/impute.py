"""Lazy imputation with a trained CASPER model.

:class:`CasperImputer` encodes the centroids once (keys/values cached), runs the spot queries once,
and keeps per spot only the head-averaged attention ``(n_spots, C)`` and the hidden state
``(n_spots, D)``. Predicting a gene is then two mat-vecs over spots::

    pred[:, g] = attention @ centroid_expression[:, g] + gamma * std_g * hidden @ embed(g)

so one gene never requires the others, and :meth:`CasperImputer.write` streams many genes to a
chunked zarr/h5ad AnnData (dask) without holding the spots x genes matrix in memory.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from napari_casper.checkpoint import check_panel
from napari_casper.device import select_device
from napari_casper.errors import CasperInputError
from napari_casper.models.bundle import CasperModel
from napari_casper.preprocess import prepare_st, standardize

#: above this many bytes the (n_spots, C) attention is recomputed per chunk instead of cached
ATTENTION_CACHE_LIMIT = 2 * 1024**3


class CasperImputer:
    """Impute genes for the spots of ``st`` with a trained model; cheap per gene.

    Parameters
    ----------
    model
        a trained :class:`~napari_casper.models.bundle.CasperModel`.
    st
        spots x genes; must contain the model's panel genes (other columns are ignored).
    device
        where to run the encoders (``"auto"``: CUDA > MPS > CPU). Decoding runs in numpy.
    batch_size
        spots per encoder batch.
    restandardize
        z-score the ST panel with this data's own statistics instead of the training ones
        (use for a new section measured with different intensity).
    hide_genes
        panel genes masked out of every spot's input and every centroid's key, exactly as
        during masked-reconstruction training: predicting such a gene is then an honest
        held-out reconstruction (used to compare predictions with measured genes).
    """

    def __init__(
        self,
        model: CasperModel,
        st: AnnData,
        *,
        device: str = "cpu",
        batch_size: int = 16384,
        restandardize: bool = False,
        hide_genes: Sequence[str] = (),
    ):
        self.model = model
        self.obs_names = pd.Index(st.obs_names.astype(str))
        self.device = select_device(device)
        self.batch_size = int(batch_size)
        check_panel(model, st.var_names)
        x, _ = prepare_st(st, model.panel_genes, normalize=model.st_normalization)
        if restandardize:
            self._spots, _, _ = standardize(x)
        else:
            self._spots, _, _ = standardize(x, model.st_mean, model.st_std)
        net = model.network.to(self.device).eval()
        self._net = net
        n_panel = len(model.panel_genes)
        self._mask = torch.ones(n_panel, device=self.device)
        hidden = [g for g in hide_genes if g in model.panel_genes]
        if len(hidden) != len(list(hide_genes)):
            unknown = sorted(set(hide_genes) - set(model.panel_genes))
            raise CasperInputError(f"cannot hide {unknown}: they are not panel genes of this model.")
        self._mask[[model.panel_genes.index(g) for g in hidden]] = 0.0
        with torch.no_grad():
            centroid_panel = torch.as_tensor(model.centroid_panel(), device=self.device)
            self._cache = net.encode_centroids(centroid_panel, self._mask)
        self._profiles = np.ascontiguousarray(model.centroids.expression, dtype=np.float32)
        self._gamma = float(net.residual_scale.detach()) if net.gene_residual else 0.0
        n_spots, n_cent = self.n_spots, model.centroids.n_centroids
        self._attention: np.ndarray | None = None
        self._hidden: np.ndarray | None = None
        if n_spots * n_cent * 4 <= ATTENTION_CACHE_LIMIT:
            self._attention = np.empty((n_spots, n_cent), np.float32)
            self._hidden = np.empty((n_spots, net.d_model), np.float32)
            start = 0
            for att, hid in self._encode_chunks(self.batch_size):
                self._attention[start : start + len(att)] = att
                self._hidden[start : start + len(att)] = hid
                start += len(att)

    # -- state -----------------------------------------------------------------------------
    @property
    def n_spots(self) -> int:
        return self._spots.shape[0]

    @property
    def genes(self) -> list[str]:
        """Every gene that can be imputed (the reference genes)."""
        return self.model.centroids.genes

    @property
    def centroid_labels(self) -> list[str]:
        return self.model.centroids.labels

    @torch.no_grad()
    def _encode_chunks(self, size: int, per_head: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, self.n_spots, size):
            x = torch.as_tensor(self._spots[start : start + size], device=self.device)
            attention, hidden = self._net.attend(x, self._mask, self._cache)
            att = attention if per_head else attention.mean(0)
            yield att.float().cpu().numpy(), hidden.float().cpu().numpy()

    def _state_chunks(self, size: int) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
        """``(spot slice, attention (n, C), hidden (n, D))`` for consecutive spot chunks."""
        if self._attention is not None:
            for start in range(0, self.n_spots, size):
                sl = slice(start, min(start + size, self.n_spots))
                yield sl, self._attention[sl], self._hidden[sl]
        else:
            for i, (att, hid) in enumerate(self._encode_chunks(size)):
                yield slice(i * size, i * size + len(att)), att, hid

    def attention(self) -> np.ndarray:
        """Head-averaged attention ``(n_spots, n_centroids)``; rows sum to 1."""
        if self._attention is not None:
            return self._attention
        return np.concatenate([a for a, _ in self._encode_chunks(self.batch_size)])

    def attention_per_head(self, spots: slice | np.ndarray | None = None) -> np.ndarray:
        """Per-head attention ``(heads, n_selected_spots, n_centroids)`` (recomputed on demand)."""
        idx = np.arange(self.n_spots)[spots if spots is not None else slice(None)]
        with torch.no_grad():
            x = torch.as_tensor(self._spots[idx], device=self.device)
            attention, _ = self._net.attend(x, self._mask, self._cache)
        return attention.float().cpu().numpy()

    def hidden_state(self) -> np.ndarray:
        """Per-spot hidden state ``(n_spots, d_model)`` after attention + LayerNorm."""
        if self._hidden is not None:
            return self._hidden
        return np.concatenate([h for _, h in self._encode_chunks(self.batch_size)])

    # -- decoding --------------------------------------------------------------------------
    def resolve_genes(self, genes: Sequence[str]) -> np.ndarray:
        """Column indices of ``genes`` in the reference (case-insensitive if trained so)."""
        genes = [str(g) for g in genes]
        index = {g: i for i, g in enumerate(self.genes)}
        lower = None
        out = []
        missing = []
        for g in genes:
            if g in index:
                out.append(index[g])
                continue
            if self.model.config.get("case_insensitive"):
                if lower is None:
                    lower = {k.lower(): v for k, v in index.items()}
                if g.lower() in lower:
                    out.append(lower[g.lower()])
                    continue
            missing.append(g)
        if missing:
            raise CasperInputError(
                f"{len(missing)} requested genes are not in the model's reference "
                f"(e.g. {missing[:5]}); only the {len(self.genes)} reference genes can be imputed"
            )
        return np.asarray(out, dtype=np.int64)

    def _gene_terms(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(profiles (C, G), residual weights (D, G))`` for the gene columns ``idx``."""
        profiles = self._profiles[:, idx]
        if not self._gamma:
            return profiles, np.zeros((self._net.d_model, len(idx)), np.float32)
        mean = profiles.mean(0, keepdims=True)
        std = profiles.std(0, keepdims=True)
        std = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        with torch.no_grad():
            z = torch.as_tensor((profiles - mean) / std, device=self.device)
            emb = self._net.embed_genes(z).float().cpu().numpy()  # G, D
        weights = (emb * (self._gamma * std.T)).T.astype(np.float32)
        return profiles, np.ascontiguousarray(weights)

    def predict(self, genes: Sequence[str] | str, spot_chunk: int = 65536) -> np.ndarray:
        """Predictions ``(n_spots, len(genes))`` (or ``(n_spots,)`` for one gene name).

        Units are those of the normalised reference (e.g. log1p of counts per 1e4).
        """
        single = isinstance(genes, str)
        idx = self.resolve_genes([genes] if single else list(genes))
        profiles, weights = self._gene_terms(idx)
        out = np.empty((self.n_spots, len(idx)), dtype=np.float32)
        for sl, att, hid in self._state_chunks(spot_chunk):
            out[sl] = att @ profiles + hid @ weights
        return out[:, 0] if single else out

    def predict_gene(self, gene: str) -> np.ndarray:
        """One gene for all spots ``(n_spots,)``: two mat-vecs, no other gene computed."""
        return self.predict(gene)

    def to_dask(self, genes: Sequence[str], *, spot_chunk: int = 50_000, gene_chunk: int = 256):
        """Lazy dask array ``(n_spots, len(genes))`` chunked ``spot_chunk x gene_chunk``."""
        import dask.array as da

        if self._attention is None:
            raise CasperInputError(
                "too many spots x centroids to cache the attention for lazy blocks; use write(), "
                "which streams gene chunks, or fewer centroids (Leiden / labels)"
            )
        genes = [str(g) for g in genes]
        idx = self.resolve_genes(genes)
        spot_chunks = _chunk_sizes(self.n_spots, spot_chunk)
        gene_chunks = _chunk_sizes(len(idx), gene_chunk)

        def block(block_info=None):
            (s0, s1), (g0, g1) = block_info[None]["array-location"]
            profiles, weights = self._gene_terms(idx[g0:g1])
            return self._attention[s0:s1] @ profiles + self._hidden[s0:s1] @ weights

        return da.map_blocks(block, chunks=(spot_chunks, gene_chunks), dtype=np.float32)

    def write(
        self,
        genes: Sequence[str],
        path: str | Path,
        *,
        spot_chunk: int = 50_000,
        gene_chunk: int = 256,
        obs: pd.DataFrame | None = None,
        obsm: dict | None = None,
    ) -> Path:
        """Write imputed ``genes`` as an AnnData to ``path`` (``.zarr`` or ``.h5ad``) in chunks.

        Only one ``spot_chunk x gene_chunk`` block is computed at a time. Refuses to overwrite.
        """
        import dask

        path = Path(path)
        if path.exists():
            raise CasperInputError(f"{path} already exists; choose another output path or delete it")
        suffix = path.suffix.lower()
        if suffix not in (".zarr", ".h5ad"):
            raise CasperInputError(f"output {path} must end in .zarr or .h5ad")
        genes = [str(g) for g in genes]
        X = self._lazy_matrix(genes, spot_chunk, gene_chunk)
        var = pd.DataFrame(index=pd.Index(genes, name=None))
        obs_df = obs.copy() if obs is not None else pd.DataFrame(index=self.obs_names)
        obs_df.index = self.obs_names
        adata = AnnData(X=X, obs=obs_df, var=var, obsm=obsm or None)
        adata.uns["casper"] = {
            "centroids": self.model.centroids.method,
            "panel_genes": list(self.model.panel_genes),
            "units": "normalised reference expression (imputed)",
        }
        with dask.config.set(scheduler="synchronous"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Writing zarr v2", category=UserWarning)
            if suffix == ".zarr":
                adata.write_zarr(path)
            else:
                adata.write_h5ad(path)
        return path

    def _lazy_matrix(self, genes, spot_chunk, gene_chunk):
        if self._attention is not None:
            return self.to_dask(genes, spot_chunk=spot_chunk, gene_chunk=gene_chunk)
        import dask.array as da

        idx = self.resolve_genes(genes)
        blocks = []
        for g0 in range(0, len(idx), gene_chunk):
            sub = [genes[i] for i in range(g0, min(g0 + gene_chunk, len(idx)))]
            blocks.append(da.from_delayed(_delayed_predict(self, sub), (self.n_spots, len(sub)), np.float32))
        return da.concatenate(blocks, axis=1)


def _delayed_predict(imputer: CasperImputer, genes: list[str]):
    import dask

    return dask.delayed(imputer.predict)(genes)


def _chunk_sizes(n: int, size: int) -> tuple[int, ...]:
    size = max(1, int(size))
    if n == 0:
        return (0,)
    return tuple([size] * (n // size) + ([n % size] if n % size else []))


def impute_with_casper(
    st: AnnData,
    reference: AnnData,
    target_genes: Sequence[str],
    *,
    seed: int = 0,
    **config,
) -> np.ndarray:
    """Train CASPER on ``st``'s panel and predict ``target_genes`` (the benchmark contract).

    Every gene of ``st`` is a visible panel gene; ``target_genes`` must be reference genes (they
    need not, and in the strict protocol do not, appear in ``st``). ``**config`` are
    :class:`~napari_casper.train.CasperConfig` fields. Returns ``(n_spots, len(target_genes))``
    float32 predictions, rows in ``st.obs_names`` order.
    """
    from napari_casper.train import train_casper

    model = train_casper(st, reference, seed=seed, **config)
    imputer = CasperImputer(model, st, device=config.get("device", "auto"))
    return imputer.predict(list(target_genes))
