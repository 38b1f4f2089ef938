"""How far a slide lies from the sections a histology model learned from (a slide-level out-of-distribution score).

A model trained on a few sections predicts well on slides that look like them and poorly on
others (another tissue, another lab's staining, another patient). Two distances, each divided by
the same distance measured *between the training sections themselves* (stored at training), so
1 means "as far as one training section is from the others":

* **appearance**: the median over the slide's spots of the distance from the spot's colour and texture
  features (:func:`~napari_casper.histology.features.handcrafted_features` of the patches as read,
  the ones prediction computes anyway, standardised over the training spots) to the nearest training
  spot. Reference: each training section's median against the other training sections. These fixed
  features, unlike the learned embedding, do not depend on how long the model trained. With a
  pretrained patch encoder (:mod:`.pretrained`), its frozen embeddings (averaged over the scales)
  take their place: what the encoder has learned to see is what the distance is measured in;
* **stain**: the distance between the slide's mean optical density per RGB channel (before stain
  normalisation) and the nearest training section's. Reference: the mean distance between training
  sections, at least :data:`MIN_STAIN_SPREAD` (a few sections of one lab can be nearly identical).

The score is the larger of the two. Above :data:`WARN_ABOVE` the slide is reported as beyond what
the model learned: its predictions should not be trusted without a check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: a slide scoring above this is reported as out of reach (1 = as far as the training sections are from each other)
WARN_ABOVE = 2.0
#: floor of the stain reference, in optical density units (near-identical training sections would make any slide look far)
MIN_STAIN_SPREAD = 0.05
#: floor of the appearance reference (distance in standardised features)
MIN_APPEARANCE_SPREAD = 1e-3


def stain_means(patches: np.ndarray, *, chunk: int = 1024) -> np.ndarray:
    """``(3,)`` mean optical density ``-log(I / 255)`` per RGB channel over every pixel of ``(n, S, P, P, 3)`` uint8 patches."""
    from napari_casper.histology.patches import channel_counts, optical_density_table

    counts = channel_counts(patches, chunk=chunk)
    return (counts * optical_density_table()).sum(axis=1) / np.maximum(counts.sum(axis=1), 1)


def nearest_distance(query: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """``(n_query,)`` Euclidean distance from each row of ``query`` to its nearest row of ``bank`` (a k-d tree in
    few dimensions; brute force in many, e.g. a pretrained encoder's embeddings, where a tree is slower)."""
    bank, query = np.asarray(bank, dtype=np.float64), np.asarray(query, dtype=np.float64)
    if bank.shape[1] > 32:
        from sklearn.neighbors import NearestNeighbors

        return NearestNeighbors(n_neighbors=1, algorithm="brute").fit(bank).kneighbors(query)[0][:, 0]
    from scipy.spatial import cKDTree

    return cKDTree(bank).query(query)[0]


@dataclass
class TrainingReach:
    """What the training sections look like, stored in the checkpoint.

    Attributes
    ----------
    feature_mean, feature_std
        ``(n_features,)`` standardisation of the appearance features, over the training spots.
    bank
        ``(n_spots, n_features)`` standardised appearance features of the training spots.
    appearance_spread
        Median over training sections of the median distance of their spots to the nearest spot of
        the *other* training sections (with one section: to the nearest other spot of it).
    section_stain
        ``(n_sections, 3)`` mean optical density per RGB channel of each training section.
    stain_spread
        Mean distance between the training sections' stain means (at least :data:`MIN_STAIN_SPREAD`).
    appearance_of
        ``"handcrafted"`` (colour and texture features) or ``"encoder"`` (a pretrained encoder's embeddings).
    """

    feature_mean: np.ndarray
    feature_std: np.ndarray
    bank: np.ndarray
    appearance_spread: float
    section_stain: np.ndarray
    stain_spread: float
    appearance_of: str = "handcrafted"

    @classmethod
    def fit(cls, features: np.ndarray, sections: np.ndarray, section_stain, appearance_of: str = "handcrafted") -> TrainingReach:
        """From the training spots' appearance features, each spot's section index, and each section's stain means."""
        features = np.asarray(features, dtype=np.float64)
        mean = features.mean(axis=0)
        std = np.where(features.std(axis=0) > 1e-9, features.std(axis=0), 1.0)
        bank = (features - mean) / std
        sections = np.asarray(sections)
        names = np.unique(sections)
        if len(names) > 1:
            medians = [float(np.median(nearest_distance(bank[sections == s], bank[sections != s]))) for s in names]
        else:  # one section: each spot against the others (its own distance 0 skipped)
            from scipy.spatial import cKDTree

            medians = [float(np.median(cKDTree(bank).query(bank, k=2)[0][:, 1]))]
        stain = np.asarray(section_stain, dtype=float).reshape(-1, 3)
        pairs = [np.linalg.norm(stain[i] - stain[j]) for i in range(len(stain)) for j in range(i + 1, len(stain))]
        return cls(
            mean.astype(np.float32),
            std.astype(np.float32),
            bank.astype(np.float32),
            max(float(np.median(medians)), MIN_APPEARANCE_SPREAD),
            stain,
            max(float(np.mean(pairs)) if pairs else 0.0, MIN_STAIN_SPREAD),
            appearance_of,
        )

    def measure(self, features: np.ndarray, stain) -> SlideReach:
        """How far a slide (its spots' appearance features and its stain means) lies from the training sections."""
        query = (np.asarray(features, dtype=np.float64) - self.feature_mean) / self.feature_std
        appearance = float(np.median(nearest_distance(query, self.bank))) / self.appearance_spread
        stain_distance = float(np.min(np.linalg.norm(self.section_stain - np.asarray(stain, float)[None], axis=1)))
        return SlideReach(appearance, stain_distance / self.stain_spread)

    #: the array fields (saved as tensors in the checkpoint)
    ARRAYS = ("feature_mean", "feature_std", "bank", "section_stain")

    def to_payload(self) -> dict:
        return {k: (np.asarray(v, dtype=np.float32) if k in self.ARRAYS else v if isinstance(v, str) else float(v))
                for k, v in asdict(self).items()}  # fmt: skip

    @classmethod
    def from_payload(cls, payload: dict) -> TrainingReach:
        return cls(**{k: (np.asarray(v, dtype=np.float64) if k in cls.ARRAYS else v if isinstance(v, str) else float(v))
                      for k, v in payload.items()})  # fmt: skip


@dataclass
class SlideReach:
    """A slide's distance from the training sections, in units of their distance from each other.

    ``score`` is the larger of ``appearance`` and ``stain``; ``out_of_reach`` when it is above :data:`WARN_ABOVE`.
    """

    appearance: float
    stain: float

    @property
    def score(self) -> float:
        return max(self.appearance, self.stain)

    @property
    def out_of_reach(self) -> bool:
        return self.score > WARN_ABOVE

    def to_dict(self) -> dict:
        return {**asdict(self), "score": self.score, "warn_above": WARN_ABOVE, "out_of_reach": self.out_of_reach}

    def describe(self) -> str:
        """One line for a user: the score, its parts, and what it means."""
        text = (
            f"out-of-distribution score {self.score:.2f} (appearance {self.appearance:.2f}, stain {self.stain:.2f}; "
            "1 = as far as the training sections are from each other)"
        )
        if self.out_of_reach:
            text = (
                f"WARNING: this slide looks unlike the training sections: {text}, above {WARN_ABOVE:g}. "
                "Its predictions are extrapolations: check them against measured genes, or train on similar sections."
            )
        return text
