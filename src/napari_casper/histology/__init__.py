"""Histology to expression: predict spot expression from H&E (CMRCNet-style, Liu et al. MedIA 2025).

Container-agnostic core: images are ``(H, W, 3)`` uint8 array-likes (numpy, dask, xarray; read
window by window), spots are ``(n_spots, 2)`` ``(x, y)`` pixel coordinates, expression is an
AnnData of raw counts. Modules, one concept each:

- :mod:`.patches`   multi-scale patch extraction (1x/2x/4x spot diameter), stain normalisation, augmentation
- :mod:`.tissue`    tissue detection on a thumbnail, virtual spots on a grid inside the tissue
- :mod:`.features`  handcrafted colour / stain / texture features (the baseline)
- :mod:`.encoder`   compact multi-scale CNN (or tokens made of a pretrained encoder's embeddings)
- :mod:`.pretrained` bring your own patch encoder (timm weights, TorchScript, model folders), cached slide embeddings
- :mod:`.model`     expression encoder, contrastive + cross-modal masked-reconstruction losses
- :mod:`.fit`       the network's training loop (:func:`fit_encoder`), embeddings, CPU thread limits
- :mod:`.train`     :class:`HistologyConfig`, head selection by leave-one-section-out, :func:`train_histology`
- :mod:`.predict`   prediction heads and :class:`HistologyPredictor` (their names: :mod:`.head_names`)
- :mod:`.regressors` ridge (alpha by CV) and top-k retrieval
- :mod:`.checkpoint` save / load
- :mod:`.evaluate`  leave-one-section-out benchmark against handcrafted baselines
- :mod:`.sections`  :class:`HistologySection` and ``.h5ad`` + image loading

Typical use::

    from napari_casper.histology.checkpoint import save_predictor
    from napari_casper.histology.sections import HistologySection
    from napari_casper.histology.tissue import detect_tissue, virtual_spots
    from napari_casper.histology.train import train_histology

    train = [HistologySection(image, coords, spot_diameter_px, expression=adata, name="s1"), ...]
    predictor = train_histology(train, progress=print, cancel=event)
    spots = virtual_spots(detect_tissue(he_image), pitch_px=2 * spot_diameter_px)
    result = predictor.predict(he_image, spots, spot_diameter_px)   # HistologyPrediction
    save_predictor(predictor, "model.pt")
"""
