"""Region annotation core on real HER2+ breast cancer and mouse olfactory bulb sections."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import mob_path, shared_path
from shapely.geometry import Point, Polygon

from napari_casper.errors import CasperInputError
from napari_casper.io.convert import anndata_to_spatialdata
from napari_casper.io.store_writes import save_spatialdata
from napari_casper.io.stores import read_spatialdata
from napari_casper.regions import (
    HER2_TUMOUR_MARKERS,
    RegionClasses,
    RegionSet,
    assign_spots_to_regions,
    differential_genes,
    export_csv,
    gene_values,
    list_region_elements,
    load_regions,
    marker_effect_sizes,
    region_mask,
    region_statistics,
    save_regions,
    spot_context,
    suggest_regions,
)

#: mouse olfactory bulb markers (gene symbols are the MOB var_names)
PENK, NRGN = "Penk", "Nrgn"
#: a layer whose data coordinates are a 2x-downsampled, shifted view of the spots' pixels
HALF_RES_AFFINE = np.array([[2.0, 0.0, 100.0], [0.0, 2.0, -50.0], [0.0, 0.0, 1.0]])


def her2_sdata(section: str):
    return anndata_to_spatialdata(ad.read_h5ad(shared_path("her2st", f"{section}.h5ad")))


@pytest.fixture(scope="module")
def c2():
    return her2_sdata("C2")


@pytest.fixture(scope="module")
def mob():
    return anndata_to_spatialdata(ad.read_h5ad(mob_path("MOB1")))


@pytest.fixture(scope="module")
def section():
    """Drawing, saving, assignment and statistics are tested on the packaged MOB1 (379 spots, pixel units)."""
    return anndata_to_spatialdata(ad.read_h5ad(mob_path("MOB1")))


def drawn_regions(ctx, affine=np.eye(3)) -> RegionSet:
    """One shape of every kind over the spots, in the data coordinates of a layer with ``affine``."""
    lo, hi = ctx.coords.min(axis=0), ctx.coords.max(axis=0)
    mid = (lo + hi) / 2
    size = (hi - lo).min()  # the freehand outline scales with the section (on HER2 C2: radius 900 +- 250 px)
    inverse = np.linalg.inv(affine)

    def data_yx(points_xy):
        yx = np.asarray(points_xy, float)[:, ::-1]
        return yx @ inverse[:2, :2].T + inverse[:2, 2]

    theta = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    freehand = mid + np.c_[np.cos(theta), np.sin(theta)] * (size * (0.195 + 0.054 * np.sin(5 * theta)))[:, None]
    return RegionSet(
        vertices=[
            data_yx([lo, [mid[0], lo[1]], [mid[0], mid[1]], [lo[0], hi[1]]]),  # polygon
            data_yx([[mid[0], lo[1]], [hi[0], lo[1]], [hi[0], mid[1]], [mid[0], mid[1]]]),  # rectangle
            data_yx([[lo[0], mid[1]], [mid[0], mid[1]], [mid[0], hi[1]], [lo[0], hi[1]]]),  # ellipse corners
            data_yx(freehand),  # freehand outline (lasso)
        ],
        shape_types=["polygon", "rectangle", "ellipse", "polygon"],
        classes=["tumour", "stroma", "immune", "my class"],
        names=["tumour A", "stroma A", "immune A", "freehand"],
        affine=affine,
    )


def direct_inside(coords_xy, polygon_xy) -> np.ndarray:
    polygon = Polygon(polygon_xy)
    return np.array([polygon.contains(Point(x, y)) for x, y in coords_xy])


def world_outline(regions: RegionSet, i: int) -> np.ndarray:
    """Shape ``i`` in world (x, y), computed here independently of the library's geometry code."""
    vertices = regions.vertices[i]
    if regions.shape_types[i] == "ellipse":
        c = vertices.mean(axis=0)
        a, b = (vertices[0] + vertices[1]) / 2 - c, (vertices[1] + vertices[2]) / 2 - c
        t = np.linspace(0, 2 * np.pi, 720, endpoint=False)
        vertices = c + np.cos(t)[:, None] * a + np.sin(t)[:, None] * b
    yx = vertices @ regions.affine[:2, :2].T + regions.affine[:2, 2]
    return yx[:, ::-1]


def test_class_legend_is_editable():
    classes = RegionClasses()
    assert classes.names == ["tumour", "stroma", "immune", "normal", "other"]
    assert classes.add("necrosis").startswith("#") and "necrosis" in classes
    classes.set_colour("necrosis", "black")
    assert classes.colour("necrosis") == "#000000"
    classes.remove("other")
    assert RegionClasses.from_uns(classes.to_uns()) == classes
    with pytest.raises(CasperInputError, match="not a colour"):
        classes.set_colour("tumour", "not-a-colour")
    with pytest.raises(CasperInputError, match="unknown region class"):
        classes.colour("cartilage")


def test_save_and_reopen_from_disk_keeps_classes_shapes_and_transformation(section, tmp_path):
    store = save_spatialdata(section, tmp_path / "section.zarr")
    ctx = spot_context(section)
    regions = drawn_regions(ctx, HALF_RES_AFFINE)
    regions.palette.set_colour("tumour", "#123456")
    saved = save_regions(store, regions, author="pathologist")
    assert (saved.shapes_name, saved.table_name) == ("regions", "regions_table")
    assert (store / "shapes" / "regions").is_dir() and (store / "tables" / "regions_table").is_dir()

    reopened = load_regions(store, "regions")  # a fresh read from disk
    assert reopened.classes == regions.classes and reopened.names == regions.names
    assert reopened.shape_types == ["polygon", "rectangle", "ellipse", "polygon"]
    assert reopened.palette.colour("tumour") == "#123456" and reopened.palette.colour("my class").startswith("#")
    np.testing.assert_allclose(reopened.affine, HALF_RES_AFFINE)
    for i in (0, 1, 3):
        assert Polygon(reopened.vertices[i]).equals(Polygon(regions.vertices[i]))
    np.testing.assert_allclose(
        np.sort(reopened.vertices[2], axis=0),
        np.sort(regions.vertices[2], axis=0),
        atol=1e-6 * np.abs(regions.vertices[2]).max(),
    )
    table = read_spatialdata(store).tables["regions_table"]
    assert set(table.obs["author"]) == {"pathologist"} and table.obs["timestamp"].str.match(r"\d{4}-\d\d-\d\dT").all()
    for before, after in zip(regions.world_polygons(), reopened.world_polygons()):
        assert before.symmetric_difference(after).area < 1e-6 * before.area


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_saving_is_versioned_and_never_replaces_silently(section, tmp_path):
    store = save_spatialdata(section, tmp_path / "section.zarr")
    regions = drawn_regions(spot_context(section))
    assert save_regions(store, regions).shapes_name == "regions"
    first = tree_digest(store / "shapes" / "regions")
    second = save_regions(store, regions.subset([0, 1]))
    assert (second.shapes_name, second.table_name) == ("regions_2", "regions_2_table")
    with pytest.raises(CasperInputError, match=r"already has .*regions.*regions_3.*overwrite"):
        save_regions(store, regions.subset([0]), "regions")
    assert tree_digest(store / "shapes" / "regions") == first
    assert len(load_regions(store, "regions")) == 4
    save_regions(store, regions.subset([3]), "regions", overwrite=True)
    assert load_regions(store, "regions").classes == ["my class"]
    assert list_region_elements(read_spatialdata(store)) == ["regions", "regions_2"]


def test_spot_assignment_matches_direct_point_in_polygon(section):
    ctx = spot_context(section)
    regions = drawn_regions(ctx, HALF_RES_AFFINE)
    labels = assign_spots_to_regions(ctx, regions)
    expected = np.full(ctx.n_spots, "outside", dtype=object)
    for i, cls in enumerate(regions.classes):  # later shapes are drawn on top and win
        expected[direct_inside(ctx.coords, world_outline(regions, i))] = cls
    assert (labels.astype(str).to_numpy() == expected).all()
    assert len(set(expected)) == 5, "every shape should hold spots in this layout"
    obs = section.tables["table"].obs
    assert (obs["region_class"].astype(str).to_numpy()[ctx.rows] == expected).all()
    assert set(obs["region_name"].astype(str)) <= {*regions.names, "outside"}


def test_region_statistics_csv_matches_independent_computation(section, tmp_path):
    ctx = spot_context(section)
    regions = drawn_regions(ctx)
    genes = [PENK, NRGN]
    stats = region_statistics(ctx, regions, genes)
    path = export_csv(stats, tmp_path / "stats.csv")
    csv = pd.read_csv(path)
    assert list(csv["level"]) == ["region"] * 4 + ["class"] * 4 + ["outside"]

    table = section.tables["table"]
    counts = table.X.toarray() if hasattr(table.X, "toarray") else np.asarray(table.X)
    counts = counts[ctx.rows]
    lognorm = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    columns = [list(table.var_names).index(g) for g in genes]
    owner = np.full(ctx.n_spots, "outside", dtype=object)
    for i, (name, cls) in enumerate(zip(regions.names, regions.classes)):
        outline = world_outline(regions, i)
        inside = direct_inside(ctx.coords, outline)
        owner[inside] = cls
        row = csv[(csv["level"] == "region") & (csv["name"] == name)].iloc[0]
        assert row["n_spots"] == inside.sum() > 0
        assert row["area"] == pytest.approx(Polygon(outline).area, rel=2e-3)  # ellipse: 72- vs 720-gon
        for gene, col in zip(genes, columns):
            assert row[f"mean_{gene}"] == pytest.approx(lognorm[inside, col].mean(), rel=1e-5)
    for cls in regions.classes:
        row = csv[(csv["level"] == "class") & (csv["name"] == cls)].iloc[0]
        assert row["n_spots"] == (owner == cls).sum()
    outside = csv[csv["level"] == "outside"].iloc[0]
    assert outside["n_spots"] == (owner == "outside").sum()
    assert outside[f"mean_{PENK}"] == pytest.approx(lognorm[owner == "outside", columns[0]].mean(), rel=1e-5)


@pytest.mark.parametrize("section", ["C2", "C3", "C4"])
def test_auto_suggest_outlines_spots_with_high_marker_expression(section, record_property):
    sdata = her2_sdata(section)
    ctx = spot_context(sdata)
    suggestion = suggest_regions(ctx, HER2_TUMOUR_MARKERS)
    regions = suggestion.to_regions("tumour")
    assert set(regions.classes) == {"tumour"} and suggestion.threshold == suggestion.otsu
    inside = (assign_spots_to_regions(ctx, regions) == "tumour").to_numpy()
    assert (inside == suggestion.above).mean() >= 0.95, "outlines should enclose the spots above the threshold"
    assert 0.2 < inside.mean() < 0.9
    values = gene_values(ctx, HER2_TUMOUR_MARKERS)
    effects = marker_effect_sizes(values, inside).set_index("gene")
    score_d = marker_effect_sizes(pd.DataFrame({"score": suggestion.score}), inside, logged=False)["cohens_d"].iloc[0]
    record_property("effect_sizes", effects.round(3).to_dict())
    print(
        f"\n{section}: {inside.sum()}/{ctx.n_spots} spots in tumour, score Cohen's d {score_d:.2f}\n{effects.round(2)}"
    )
    assert score_d > 1.5
    assert effects.loc["ERBB2", "cohens_d"] > 1.0 and effects.loc["ERBB2", "fold_change"] > 1.3
    assert effects.loc["EPCAM", "cohens_d"] > 1.0 and effects.loc["EPCAM", "fold_change"] > 2.0
    assert (effects["mean_inside"] > effects["mean_outside"]).all()
    # not circular: outline from the ERBB2 amplicon alone, then look at epithelial genes it never saw
    amplicon = suggest_regions(ctx, ["ERBB2", "GRB7"])
    amplicon_inside = (assign_spots_to_regions(ctx, amplicon.to_regions()) == "tumour").to_numpy()
    held_out = marker_effect_sizes(gene_values(ctx, ["EPCAM", "CDH1"]), amplicon_inside).set_index("gene")
    print(f"held out (region from ERBB2+GRB7 only):\n{held_out.round(2)}")
    assert (held_out["cohens_d"] > 1.0).all() and (held_out["fold_change"] > 2.0).all()
    # the slider: a higher threshold outlines fewer spots
    stricter = suggestion.at_threshold(suggestion.otsu + 0.5 * suggestion.smoothed.std())
    assert 0 < (assign_spots_to_regions(ctx, stricter.to_regions()) == "tumour").sum() < inside.sum()


def test_auto_suggest_on_mob_by_ensembl_id_and_from_imputed_values(mob):
    ctx = spot_context(mob)
    suggestion = suggest_regions(ctx, [PENK, NRGN])
    inside = (assign_spots_to_regions(ctx, suggestion.to_regions("normal")) == "normal").to_numpy()
    effects = marker_effect_sizes(gene_values(ctx, [PENK, NRGN]), inside).set_index("gene")
    print(f"\nMOB1 Penk/Nrgn: {inside.sum()}/{ctx.n_spots} spots\n{effects.round(2)}")
    assert (effects["cohens_d"] > 1.0).all()
    # "any source": values that are not in the table (an imputed gene on the spots layer)
    imputed = pd.DataFrame(
        {"Penk_imputed": gene_values(ctx, [PENK])[PENK].to_numpy() * 0.8 + 0.1}, index=ctx.instance_ids
    )
    from_imputed = suggest_regions(ctx, ["Penk_imputed"], extra=imputed)
    reference = suggest_regions(ctx, [PENK])
    np.testing.assert_allclose(from_imputed.smoothed, reference.smoothed, atol=1e-6)


def test_differential_genes_inside_vs_outside_suggested_tumour(c2):
    ctx = spot_context(c2)
    regions = suggest_regions(ctx, HER2_TUMOUR_MARKERS).to_regions()
    inside = region_mask(ctx, regions, classes=["tumour"])
    genes = differential_genes(ctx, inside)
    assert len(genes) == c2.tables["table"].n_vars
    top = list(genes["gene"][:100])
    assert "EPCAM" in top or "GRB7" in top, top[:20]
    assert (genes["score"].diff().dropna() <= 1e-9).all()
    erbb2 = genes.set_index("gene").loc["ERBB2"]
    assert erbb2["log2_fold_change"] > 0 and erbb2["pval_adj"] < 0.01


def test_bad_inputs_give_clear_messages(section, mob, tmp_path):
    ctx = spot_context(section)
    with pytest.raises(CasperInputError, match=r"\['Nrg'\] are not in table.*Nrgn.*Fix"):
        suggest_regions(ctx, ["Nrg", PENK])
    with pytest.raises(CasperInputError, match="symbols vs Ensembl ids"):
        gene_values(spot_context(mob), ["Penkk"])
    by_id = gene_values(spot_context(mob), ["ENSMUSG00000045573"])["ENSMUSG00000045573"]  # via var["gene_ids"]
    assert np.allclose(by_id, gene_values(spot_context(mob), ["Penk"])["Penk"])
    with pytest.raises(CasperInputError, match="no genes given"):
        suggest_regions(ctx, [])
    # hints: another case first (human vs mouse symbols), close spellings case-blind, never a far name
    from napari_casper.regions.expression import close_names, known_genes

    assert close_names("KRT19", ["Rps19", "Krt19", "Krt18"]) == ["Krt19"]
    assert close_names("KRT19", ["Rps19", "Krt18"]) == ["Krt18"]
    assert close_names("ERBB2", ["Rps19", "Penk"]) == []
    assert known_genes(ctx, ["Penk", "ERBB2", "Nrgn"]) == (["Penk", "Nrgn"], ["ERBB2"])
    # an empty region: far away from every spot
    far = ctx.coords.max(axis=0) + 5000
    empty = RegionSet(
        [np.array([[far[1], far[0]], [far[1] + 100, far[0]], [far[1], far[0] + 100]])], ["polygon"], ["tumour"]
    )
    with pytest.raises(CasperInputError, match="contains no spot"):
        differential_genes(ctx, region_mask(ctx, empty, classes=["tumour"]))
    assert region_statistics(ctx, empty, [PENK]).iloc[0]["n_spots"] == 0
    # shapes in another coordinate system
    store = save_spatialdata(section, tmp_path / "section.zarr")
    save_regions(store, drawn_regions(ctx))
    with pytest.raises(CasperInputError, match=r"coordinate system.*\['global'\].*not 'aligned'"):
        load_regions(store, "regions", coordinate_system="aligned")
    elsewhere = drawn_regions(ctx)
    elsewhere.coordinate_system = "aligned"
    with pytest.raises(CasperInputError, match="regions are in coordinate system 'aligned'.*spots.*'global'"):
        assign_spots_to_regions(ctx, elsewhere)
    with pytest.raises(CasperInputError, match="encloses no area"):  # lines are kept, but cover no spots
        RegionSet([np.array([[0, 0], [10, 10]])], ["line"], ["tumour"]).world_polygons()
    with pytest.raises(CasperInputError, match="no regions to save"):
        save_regions(store, RegionSet([], [], []))
    with pytest.raises(CasperInputError, match="not a SpatialData store"):
        save_regions(tmp_path, drawn_regions(ctx))
    with pytest.raises(CasperInputError, match="does not exist"):
        export_csv(pd.DataFrame({"a": [1]}), tmp_path / "missing" / "x.csv")


# --- every napari shape type round-trips through the regions store (no ../shared data needed) ---

#: ellipse / rectangle half-axes (y, x) and rotation, data units
SEMI_A, SEMI_B, TURN = 120.0, 45.0, 0.7


def turned_box(centre_yx) -> np.ndarray:
    """napari's 4 corners (4, 2) (y, x) of a 2 SEMI_A x 2 SEMI_B box turned by TURN about ``centre_yx``."""
    rotation = np.array([[np.cos(TURN), -np.sin(TURN)], [np.sin(TURN), np.cos(TURN)]])
    return np.array([[-SEMI_A, -SEMI_B], [-SEMI_A, SEMI_B], [SEMI_A, SEMI_B], [SEMI_A, -SEMI_B]]) @ rotation.T + centre_yx


def every_shape_type(affine=np.eye(3)) -> RegionSet:
    """One region of every napari shape type with known geometry, in data (y, x) coordinates."""
    return RegionSet(
        vertices=[
            turned_box([400.0, 300.0]),  # ellipse: area pi a b
            turned_box([700.0, 650.0]),  # rotated rectangle: area 4 a b
            np.array([[0.0, 0.0], [0.0, 90.0], [70.0, 120.0], [20.0, 35.0], [60.0, 10.0]]),  # polygon
            np.array([[0.0, 0.0], [30.0, 40.0], [0.0, 80.0], [-40.0, 60.0]]),  # open path (closed: simple)
            np.array([[5.0, 5.0], [35.0, 45.0]]),  # line, length 50
        ],
        shape_types=["ellipse", "rectangle", "polygon", "path", "line"],
        classes=["tumour", "stroma", "immune", "normal", "other"],
        affine=affine,
    )


def shoelace(vertices_yx) -> float:
    y, x = np.asarray(vertices_yx, float).T
    return abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2


def test_every_shape_type_round_trips_through_the_regions_store(tmp_path):
    import spatialdata as sd

    from napari_casper.regions.geometry import ELLIPSE_VERTICES
    from napari_casper.regions.store import element_geometries

    store = save_spatialdata(sd.SpatialData(), tmp_path / "empty.zarr")
    regions = every_shape_type(HALF_RES_AFFINE)
    save_regions(store, regions)
    element = read_spatialdata(store).shapes["regions"]
    assert set(element.geom_type) == {"Polygon"} and list(element["shape_type"]) == regions.shape_types
    assert [g.geom_type for g in element_geometries(element)] == ["Polygon"] * 3 + ["LineString"] * 2

    reopened = load_regions(store)
    assert reopened.shape_types == regions.shape_types
    for before, after in zip(regions.vertices, reopened.vertices):  # same vertices, same order
        np.testing.assert_allclose(after, before, rtol=0, atol=1e-9)
    np.testing.assert_allclose(reopened.affine, HALF_RES_AFFINE)

    # true geometry against the analytic truth, in data and in world coordinates (det = 4)
    ellipse, rectangle, polygon, path, line = reopened.data_geometries()
    n = ELLIPSE_VERTICES
    assert ellipse.area == pytest.approx(np.pi * SEMI_A * SEMI_B * n / (2 * np.pi) * np.sin(2 * np.pi / n), rel=1e-12)
    assert 0 < 1 - ellipse.area / (np.pi * SEMI_A * SEMI_B) < 4e-4  # 144-gon inscribed: 0.032 % short
    assert rectangle.area == pytest.approx(4 * SEMI_A * SEMI_B, rel=1e-12)
    assert polygon.area == pytest.approx(shoelace(regions.vertices[2]), rel=1e-12)
    assert path.length == pytest.approx(100 + np.hypot(40, 20)) and line.length == pytest.approx(50.0)
    world = reopened.world_geometries()
    assert world[0].area == pytest.approx(4 * ellipse.area) and world[4].length == pytest.approx(100.0)
    # as areas (spots, statistics): the path is closed, the line covers nothing
    with pytest.raises(CasperInputError, match="shape 4 is a 'line', which encloses no area"):
        reopened.world_polygons()
    areas = reopened.subset([0, 1, 2, 3]).world_polygons()
    assert areas[3].area == pytest.approx(4 * shoelace(regions.vertices[3]))


def test_regions_reexpressed_in_another_layer_keep_their_shape_types():
    regions = every_shape_type(HALF_RES_AFFINE)
    moved = RegionSet.from_world_polygons(regions.world_geometries(), regions.classes, affine=np.eye(3))
    assert moved.shape_types == ["polygon", "polygon", "polygon", "path", "line"]  # ellipse/rectangle: outlines
    for before, after in zip(regions.world_geometries(), moved.data_geometries()):
        assert before.equals_exact(after, 1e-9)


def test_stored_lines_and_ellipses_are_checked_before_they_are_trusted():
    from shapely.geometry import Polygon

    from napari_casper.regions.geometry import ellipse_vertices, shape_vertices
    from napari_casper.regions.store import restored_geometry, stored_geometry

    line = every_shape_type().data_geometries()[4]
    outline, wkt = stored_geometry(line)
    assert restored_geometry(outline, wkt).equals_exact(line, 0)
    edited = outline.buffer(5)  # the outline was changed in another tool: it is a polygon now
    assert restored_geometry(edited, wkt) is edited and restored_geometry(outline, "not wkt") is outline
    # an ellipse sampled another way (older stores: 72 vertices from another start) is still an ellipse
    corners = turned_box([0.0, 0.0])
    shifted = np.roll(ellipse_vertices(corners, 72), 5, axis=0)
    [(back, kind)] = shape_vertices(Polygon(shifted[:, ::-1]), "ellipse")
    assert kind == "ellipse" and Polygon(back).area == pytest.approx(4 * SEMI_A * SEMI_B)
    # a polygon that is no longer an ellipse or a rectangle loads as a polygon
    assert shape_vertices(Polygon([(0, 0), (10, 0), (12, 8), (0, 8)]), "rectangle")[0][1] == "polygon"
    dented = shifted.copy()
    dented[3] *= 0.9
    assert shape_vertices(Polygon(dented[:, ::-1]), "ellipse")[0][1] == "polygon"
