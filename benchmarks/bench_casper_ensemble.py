"""Would averaging the networks one CASPER training already trains beat the refit alone? (strict protocol)

With ``reference_weight="auto"`` a training trains three networks: the validation run without the
reference cells, the validation run with them, and the refit on every gene and spot (the model it
returns). For every fold (held-out genes removed from the spatial data) this records all three and
scores, per held-out gene, the Pearson r against the measurement (normalised as CASPER normalises
its panel) of:

* ``final``: the refit (CASPER as it is);
* ``mean_of_three``: the mean of the three networks' predictions, each standardised per gene;
* ``final_and_chosen``: the same for the refit and the validation network that was chosen;
* ``weight_average``: one network whose weights are the mean of the refit's and the chosen one's.

    nice python benchmarks/bench_casper_ensemble.py --data drosophila      # or seqfish, small

``--data`` as in ``bench_casper_ablation.py`` (``small`` uses 2 folds). Results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="drosophila")
    args = parser.parse_args(argv)

    from bench_casper_ablation import load

    import napari_casper.casper.training as training
    from napari_casper.casper.calibration import pearson_columns
    from napari_casper.casper.preprocess import prepare_st
    from napari_casper.evaluate.protocol import hide_genes, split_genes

    trained = []  # (model, its selected weights) of every network a training trains, in order
    train_one = training._train

    def recording(*a, **k):
        model = train_one(*a, **k)
        trained.append((model, copy.deepcopy(model.network.state_dict())))
        return model

    training._train = recording
    st, reference, label_key = load(args.data)
    options = {"label_key": label_key} if label_key else {}
    split = split_genes(st, reference, n_folds=2 if args.data == "small" else 10, seed=0)
    scores: dict[str, list[np.ndarray]] = {}
    for fold, held in enumerate(split.folds):
        trained.clear()
        visible = hide_genes(st, held)
        final = training.train_casper(visible, reference, seed=0, calibrate=False, **options)
        measured = prepare_st(st, held, normalize=final.st_normalization)[0]
        runs = [_predict(final, state, visible, held) for _, state in trained]
        chosen = next(i for i, (m, _) in enumerate(trained[:-1]) if m.history is final.history)
        last = trained[-1][1]
        average = {k: (v.float() + trained[chosen][1][k].float()) / 2 if v.is_floating_point() else v for k, v in last.items()}
        results = {
            "final": runs[-1],
            "mean_of_three": sum(runs),
            "final_and_chosen": runs[-1] + runs[chosen],
            "weight_average": _predict(final, average, visible, held),
        }
        for name, prediction in results.items():
            scores.setdefault(name, []).append(pearson_columns(prediction, measured))
        print(f"fold {fold} ({len(trained)} networks, chosen {chosen}): "
              + ", ".join(f"{k} {v[-1].mean():.4f}" for k, v in scores.items()), flush=True)  # fmt: skip
    print(f"{args.data}, mean PCC over {sum(len(v) for v in scores['final'])} held-out genes: "
          + ", ".join(f"{k} {np.concatenate(v).mean():.4f}" for k, v in scores.items()))  # fmt: skip


def _predict(final, state: dict, visible, held) -> np.ndarray:
    """The held-out genes predicted by ``final`` with the network weights ``state``, standardised per gene."""
    from napari_casper.casper.calibration import standardise_columns
    from napari_casper.casper.imputation import CasperImputer

    model = copy.copy(final)
    model.network = copy.deepcopy(final.network)
    model.network.load_state_dict(state)
    model.network.eval()
    return standardise_columns(CasperImputer(model, visible).predict(held))


if __name__ == "__main__":
    main()
