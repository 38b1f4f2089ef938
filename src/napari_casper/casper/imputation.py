"""Lazy imputation with a trained CASPER model.

:class:`SpotEncoder` holds what depends only on the model: the centroid keys/values (encoded
once, cached), the spot encoder and the per-gene decoding terms. :class:`CasperImputer` runs
the spot queries of one ST dataset once and keeps per spot only the head-averaged attention
``(n_spots, C)`` and the hidden state ``(n_spots, D)``. Predicting a gene is then two mat-vecs
over spots (:func:`decode_block`)::

    pred[:, g] = attention @ centroid_expression[:, g] + gamma * std_g * hidden @ embed(g)

so one gene never requires the others. Writing many genes for many spots in chunks, with
resume and distributed workers, lives in :mod:`napari_casper.casper.batch.impute`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from napari_casper.casper.batch.spot_source import check_spots
from napari_casper.casper.batch.store import decode_block
from napari_casper.casper.checkpoint import check_panel
from napari_casper.casper.model import CasperModel
from napari_casper.casper.preprocess import prepare_st, standardize
from napari_casper.errors import CasperInputError
from napari_casper.runtime.device import autocast, select_device, to_device, torch_threads

#: above this many bytes the per-spot state (attention (n, C) + hidden (n, D), float32) is
#: recomputed per chunk instead of cached
ATTENTION_CACHE_LIMIT = 2 * 1024**3


def aligned(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A float32 C-contiguous copy of ``array`` starting on an ``alignment``-byte boundary.

    Vectorised float32 kernels (MKL under torch on CPU) may take another code path, and round
    differently, when their input starts elsewhere in memory, and numpy guarantees no alignment:
    encoding from aligned copies keeps the same values giving the same bits in any process and
    any run (resumed batch imputation, dask workers).
    """
    array = np.asarray(array, dtype=np.float32)
    buffer = np.empty(array.nbytes + alignment, dtype=np.uint8)
    offset = -buffer.ctypes.data % alignment
    out = buffer[offset : offset + array.nbytes].view(np.float32).reshape(array.shape)
    out[...] = array
    return out


class SpotEncoder:
    """The model's side of imputation: cached centroid keys/values, spot encoding, gene terms.

    ``hide_genes`` are panel genes masked out of every spot's input and every centroid's key
    (see :class:`CasperImputer`).
    """

    def __init__(self, model: CasperModel, *, device: str = "cpu", hide_genes: Sequence[str] = ()):
        self.model = model
        self.device = select_device(device)
        self._net = model.network.to(self.device).eval()
        self.hide_genes = [str(g) for g in hide_genes]
        unknown = sorted(set(self.hide_genes) - set(model.panel_genes))
        if unknown:
            raise CasperInputError(f"cannot hide {unknown}: they are not panel genes of this model.")
        self._mask = torch.ones(len(model.panel_genes), device=self.device)
        self._mask[[model.panel_genes.index(g) for g in self.hide_genes]] = 0.0
        # small products, on one thread: the same bits whatever the process's thread settings
        with torch.no_grad(), torch_threads(1):
            centroid_panel = to_device(aligned(model.centroid_panel()), self.device)
            self._cache = self._net.encode_centroids(centroid_panel, self._mask)
        self._profiles = np.ascontiguousarray(model.centroids.expression, dtype=np.float32)
        self._gamma = float(self._net.residual_scale.detach()) if self._net.gene_residual else 0.0

    @property
    def genes(self) -> list[str]:
        """Every gene that can be imputed (the reference genes)."""
        return self.model.centroids.genes

    @property
    def state_width(self) -> int:
        """Floats kept per spot: centroids (attention) + ``d_model`` (hidden state)."""
        return self.model.centroids.n_centroids + self._net.d_model

    def prepare(self, st: AnnData, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> np.ndarray:
        """Panel z-scores ``(n, P)`` of ``st`` (normalised as in training; training statistics
        unless ``mean``/``std`` are given). Row-wise, so chunks of spots give the same rows."""
        check_panel(self.model, st.var_names)
        x, _ = prepare_st(st, self.model.panel_genes, normalize=self.model.st_normalization)
        if mean is None:
            mean, std = self.model.st_mean, self.model.st_std
        return standardize(x, mean, std)[0]

    @torch.no_grad()
    def encode(self, z: np.ndarray, batch_size: int = 16384, per_head: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(attention, hidden)`` for consecutive batches of the z-scored spots ``z``."""
        for start in range(0, len(z), batch_size):
            x = to_device(aligned(z[start : start + batch_size]), self.device)  # pinned, non-blocking on CUDA
            with autocast(self.device):  # mixed precision on CUDA, fp32 elsewhere
                attention, hidden = self._net.attend(x, self._mask, self._cache)
            att = attention.float() if per_head else attention.float().mean(0)
            yield att.float().cpu().numpy(), hidden.float().cpu().numpy()

    def state(self, z: np.ndarray, batch_size: int = 16384) -> tuple[np.ndarray, np.ndarray]:
        """Head-averaged attention ``(n, C)`` and hidden state ``(n, D)`` of ``z``, whole."""
        parts = list(self.encode(z, batch_size))
        if not parts:
            return np.zeros((0, self.model.centroids.n_centroids), np.float32), np.zeros((0, self._net.d_model), np.float32)
        return np.concatenate([a for a, _ in parts]), np.concatenate([h for _, h in parts])

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

    def gene_terms(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(profiles (C, G), residual weights (D, G))`` for the gene columns ``idx``."""
        profiles = np.ascontiguousarray(self._profiles[:, idx])
        if not self._gamma:
            return profiles, np.zeros((self._net.d_model, len(idx)), np.float32)
        mean = profiles.mean(0, keepdims=True)
        std = profiles.std(0, keepdims=True)
        std = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        with torch.no_grad(), torch_threads(1):  # thread-count independent bits (see __init__)
            z = to_device(aligned((profiles - mean) / std), self.device)
            emb = self._net.embed_genes(z).float().cpu().numpy()  # G, D
        weights = (emb * (self._gamma * std.T)).T.astype(np.float32)
        return profiles, np.ascontiguousarray(weights)


class CasperImputer:
    """Impute genes for the spots of ``st`` with a trained model; cheap per gene.

    Parameters
    ----------
    model
        a trained :class:`~napari_casper.casper.model.CasperModel`.
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
        self.encoder = SpotEncoder(model, device=device, hide_genes=hide_genes)
        self.device = self.encoder.device
        self.batch_size = int(batch_size)
        self.restandardize = bool(restandardize)
        check_spots(st.n_obs, st.var_names, "the ST table")  # no spots, or a gene in two columns: said, not guessed
        check_panel(model, st.var_names)
        if restandardize:
            x, _ = prepare_st(st, model.panel_genes, normalize=model.st_normalization)
            self._spots = standardize(x)[0]
        else:
            self._spots = self.encoder.prepare(st)
        self._attention: np.ndarray | None = None
        self._hidden: np.ndarray | None = None
        self._difficulty: np.ndarray | None = None  # each spot's interval difficulty, computed once when asked
        if self.n_spots * self.encoder.state_width * 4 <= ATTENTION_CACHE_LIMIT:
            self._attention, self._hidden = self.encoder.state(self._spots, self.batch_size)

    # -- state -----------------------------------------------------------------------------
    @property
    def n_spots(self) -> int:
        return self._spots.shape[0]

    @property
    def state_cached(self) -> bool:
        """True when every spot's attention and hidden state are held in memory."""
        return self._attention is not None

    @property
    def genes(self) -> list[str]:
        """Every gene that can be imputed (the reference genes)."""
        return self.encoder.genes

    @property
    def centroid_labels(self) -> list[str]:
        return self.model.centroids.labels

    def spot_state(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Attention ``(n, C)`` and hidden state ``(n, D)`` of spots ``start:stop``."""
        if self._attention is not None:
            return self._attention[start:stop], self._hidden[start:stop]
        return self.encoder.state(self._spots[start:stop], self.batch_size)

    def state_chunks(self, size: int) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
        """``(spot slice, attention (n, C), hidden (n, D))`` for consecutive spot chunks."""
        for start in range(0, self.n_spots, size):
            stop = min(start + size, self.n_spots)
            yield (slice(start, stop), *self.spot_state(start, stop))

    def attention(self) -> np.ndarray:
        """Head-averaged attention ``(n_spots, n_centroids)``; rows sum to 1."""
        if self._attention is not None:
            return self._attention
        return np.concatenate([a for a, _ in self.encoder.encode(self._spots, self.batch_size)])

    def attention_per_head(self, spots: slice | np.ndarray | None = None) -> np.ndarray:
        """Per-head attention ``(heads, n_selected_spots, n_centroids)`` (recomputed on demand)."""
        idx = np.arange(self.n_spots)[spots if spots is not None else slice(None)]
        return next(self.encoder.encode(self._spots[idx], max(len(idx), 1), per_head=True))[0]

    def hidden_state(self) -> np.ndarray:
        """Per-spot hidden state ``(n_spots, d_model)`` after attention + LayerNorm (an ensemble's networks'
        side by side: ``K * d_model`` wide)."""
        if self._hidden is not None:
            return self._hidden
        return np.concatenate([h for _, h in self.encoder.encode(self._spots, self.batch_size)])

    # -- decoding --------------------------------------------------------------------------
    def resolve_genes(self, genes: Sequence[str]) -> np.ndarray:
        """Column indices of ``genes`` in the reference (case-insensitive if trained so)."""
        return self.encoder.resolve_genes(genes)

    def predict(self, genes: Sequence[str] | str, spot_chunk: int = 65536) -> np.ndarray:
        """Predictions ``(n_spots, len(genes))`` (or ``(n_spots,)`` for one gene name).

        Units are those of the normalised reference (e.g. log1p of counts per 1e4).
        """
        single = isinstance(genes, str)
        idx = self.resolve_genes([genes] if single else list(genes))
        profiles, weights = self.encoder.gene_terms(idx)
        out = np.empty((self.n_spots, len(idx)), dtype=np.float32)
        for sl, att, hid in self.state_chunks(spot_chunk):
            out[sl] = decode_block(att, hid, profiles, weights)
        return out[:, 0] if single else out

    # -- trust and intervals (napari_casper.casper.calibration) ---------------------------------
    @property
    def calibration(self):
        """The model's :class:`~napari_casper.casper.calibration.Calibration` (None: trained without one)."""
        return self.model.calibration

    @property
    def calibrated(self) -> bool:
        """Whether trust and intervals can be given (a calibration completed after training)."""
        return self.model.calibration is not None and len(self.model.calibration.reference_accuracy) > 0

    def _calibration(self):
        if not self.calibrated:
            raise CasperInputError(
                "this model has no calibration (trained without validation genes, or by an older version): "
                "train again to get trust and intervals"
            )
        return self.model.calibration

    def trust(self, genes: Sequence[str]) -> np.ndarray:
        """Expected Pearson r of each gene's prediction with what the spots would measure ``(G,)``."""
        return self._calibration().trust(self.trust_signs(genes))

    def trust_signs(self, genes: Sequence[str]) -> np.ndarray:
        """``(G, 3)`` the signs trust rests on, in the order of
        :data:`~napari_casper.casper.calibration.SIGNS` (see :mod:`napari_casper.casper.calibration`)."""
        from napari_casper.casper.calibration import gene_signs

        calibration = self._calibration()
        idx = self.resolve_genes(list(genes))
        return gene_signs(
            self.model, self._spots, idx, hidden=self.encoder.hide_genes,
            reference_accuracy=calibration.reference_accuracy[idx], reference_std=calibration.reference_std[idx],
        )

    def difficulty(self) -> np.ndarray:
        """Each spot's difficulty ``(n_spots,)``, mean 1: how badly its own panel genes are predicted hidden."""
        from napari_casper.casper.calibration import spot_difficulty

        if self._difficulty is None:
            self._difficulty = spot_difficulty(self.model, self._spots, hidden=self.encoder.hide_genes)
        return self._difficulty

    def intervals(
        self, genes: Sequence[str], prediction: np.ndarray | None = None, trust: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(trust (G,), low (n, G), high (n, G))``: conformal intervals at the calibration's level, in
        standardised units of each gene over these spots (see :mod:`napari_casper.casper.calibration`);
        ``prediction`` and ``trust``, when given, are those of ``genes`` already computed."""
        calibration = self._calibration()
        genes = list(genes)
        prediction = self.predict(genes) if prediction is None else prediction
        trust = self.trust(genes) if trust is None else np.asarray(trust, dtype=np.float64)
        low, high = calibration.interval(prediction, trust, self.difficulty())
        return trust, low, high

    def interval_scale(self, trust: np.ndarray) -> np.ndarray:
        """``(G,)`` half-width of the interval at a spot of difficulty 1, for genes with ``trust``."""
        return self._calibration().quantile * np.sqrt(1.0 - np.asarray(trust, dtype=np.float64) ** 2)

    def interval_widths(self, trust: np.ndarray) -> np.ndarray:
        """``(n_spots, G)`` widths of the conformal intervals of genes with ``trust`` (standard deviations):
        ``2 * interval_scale(trust) * difficulty()``."""
        return (2.0 * self.difficulty()[:, None] * self.interval_scale(trust)[None, :]).astype(np.float32)

    def predict_gene(self, gene: str) -> np.ndarray:
        """One gene for all spots ``(n_spots,)``: two mat-vecs, no other gene computed."""
        return self.predict(gene)

    def to_dask(self, genes: Sequence[str], *, spot_chunk: int = 50_000, gene_chunk: int = 256):
        """Lazy dask array ``(n_spots, len(genes))`` chunked ``spot_chunk x gene_chunk``."""
        import dask.array as da

        if self._attention is None:
            raise CasperInputError(
                "too many spots x centroids to cache the attention for lazy blocks; use write(), "
                "which streams spot chunks, or fewer centroids (Leiden / labels)"
            )
        idx = self.resolve_genes([str(g) for g in genes])
        spot_chunks = _chunk_sizes(self.n_spots, spot_chunk)
        gene_chunks = _chunk_sizes(len(idx), gene_chunk)

        def block(block_info=None):
            (s0, s1), (g0, g1) = block_info[None]["array-location"]
            profiles, weights = self.encoder.gene_terms(idx[g0:g1])
            return decode_block(self._attention[s0:s1], self._hidden[s0:s1], profiles, weights)

        return da.map_blocks(block, chunks=(spot_chunks, gene_chunks), dtype=np.float32)


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
    :class:`~napari_casper.casper.training.CasperConfig` fields. Returns ``(n_spots, len(target_genes))``
    float32 predictions, rows in ``st.obs_names`` order.
    """
    from napari_casper.casper.training import train_casper

    model = train_casper(st, reference, seed=seed, **config)
    imputer = CasperImputer(model, st, device=config.get("device", "auto"))
    return imputer.predict(list(target_genes))
