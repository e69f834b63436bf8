"""The map's explorer of an embedding set (demo/tabs/map/explore*.py, core/set_projection.py): which points a
lasso holds (against an independent winding-number count), the projection cached with the set, a query's
ranking against NumPy, and, through the running app's API, a set opened, searched and refused when another
model made it or it lies outside the allowed folders."""

from __future__ import annotations

import re

import numpy as np
import pytest

from core.embedding_set import EmbedSource, embed_chunks, merge_parts, open_set
from core.set_projection import SetProjection, cached_projection, nearest_images, place_query, project_set
from demo.tabs.map.explore import inside


def winding(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Inside when the polygon's angles seen from the point sum to ±2π (an independent rule)."""
    a = poly[None, :, :] - points[:, None, :]
    b = np.roll(poly, -1, axis=0)[None, :, :] - points[:, None, :]
    ang = np.arctan2(a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0], (a * b).sum(-1))
    return np.abs(ang.sum(1)) > np.pi


def test_a_lasso_holds_the_points_inside_its_polygon_and_a_box_its_range():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, (5000, 2))
    star = np.array([[50, 5], [61, 38], [95, 38], [67, 58], [78, 92], [50, 70], [22, 92], [33, 58], [5, 38], [39, 38]], float)
    got = inside(pts, {"x": star[:, 0].tolist(), "y": star[:, 1].tolist()}, None)
    np.testing.assert_array_equal(got, winding(pts, star))
    assert 0 < got.sum() < len(pts)
    box = inside(pts, None, {"x": [70, 20], "y": [10, 30]})
    np.testing.assert_array_equal(box, (pts[:, 0] >= 20) & (pts[:, 0] <= 70) & (pts[:, 1] >= 10) & (pts[:, 1] <= 30))


@pytest.fixture(scope="module")
def shapes_set(tmp_path_factory, bundled):
    folder = tmp_path_factory.mktemp("sets") / "shapes300"
    embed_chunks(bundled, EmbedSource("shapes", n=300, seed=2), folder, chunk_rows=128)
    merge_parts(folder)
    return folder


def test_the_projection_is_made_once_and_then_read_from_the_set(shapes_set):
    es = open_set(shapes_set)
    s = SetProjection(n_epochs=30)
    xy, cached = project_set(es, s)
    assert not cached and xy.shape == (600, 2) and np.isfinite(xy).all()
    again, cached = project_set(es, s)
    assert cached and np.array_equal(again, xy)
    assert cached_projection(es, SetProjection(n_epochs=31)) is None  # other settings: another file


def test_a_query_ranks_the_images_as_numpy_does_and_lands_among_them(shapes_set):
    es = open_set(shapes_set)
    q = es.text_emb[7]
    rows, cos = nearest_images(es, q, 10)
    order = np.argsort(-(es.image_emb.astype(np.float64) @ q), kind="stable")[:10]
    np.testing.assert_array_equal(rows, order)
    np.testing.assert_allclose(cos, es.image_emb[order] @ q, rtol=1e-6)
    xy = np.random.default_rng(1).normal(size=(600, 2)).astype(np.float32)
    x, y = place_query(xy, rows, cos)
    assert xy[rows, 0].min() <= x <= xy[rows, 0].max() and xy[rows, 1].min() <= y <= xy[rows, 1].max()


def test_a_selection_names_class_prompts_only_in_the_space_of_the_sets_model(shapes_set, micro_dir, monkeypatch):
    """Labels' prompts are encoded by the session's model: with another model than the set's, none are named
    (their cosines with this set's images would mean nothing) and the summary says why."""
    from types import SimpleNamespace

    from demo.platform.config import AppConfig
    from demo.platform.context import AppContext
    from demo.platform.contract import Call
    from demo.tabs.map import explore_view as view
    from demo.tabs.map.explore import Explored

    monkeypatch.setenv("CLIP_LAB_DATA_DIRS", str(shapes_set.parent))
    monkeypatch.setenv("CLIP_LAB_MODEL_DIRS", str(micro_dir.parent))
    call = Call(AppContext.create(AppConfig.from_env()))
    es = view.the_set(call, str(shapes_set))
    ex = Explored(str(es.folder), es.receipt["created"], SetProjection(method="pca"), len(es), 2 * len(es))
    lasso = {"lasso": {"x": [-1, 65536, 65536, -1], "y": [-1, -1, 65536, 65536]}}  # around every point
    _, own, _ = view.selected(call, ex, None, SimpleNamespace(_data=lasso))
    _, other, _ = view.selected(call, ex, str(micro_dir), SimpleNamespace(_data=lasso))
    assert "Selection:** 300 images" in own and "Class prompts nearest to its centroid" in own
    assert "Class prompts nearest" not in other and "No class prompts" in other
    # the session's model changes: the drawn map says whose space it shows, and says nothing for the set's own
    assert view.model_changed(call, ex, None) == "" and view.model_changed(call, None, str(micro_dir)) == ""
    notice = view.model_changed(call, ex, str(micro_dir))
    assert f"space of `{es.receipt['model']}`" in notice and f"session's model `{micro_dir}`" in notice


# ---------------------------------------------------------------- through the running app's API

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402


@pytest.fixture(scope="module")
def app(tmp_path_factory, shapes_set, micro_dir):
    from conftest_app import running_app

    from core.model import load

    for name, n in (("by-another-model", 40), ("too-big", 320)):
        embed_chunks(load(str(micro_dir)), EmbedSource("shapes", n=n), shapes_set.parent / name, chunk_rows=512)
        merge_parts(shapes_set.parent / name)
    env = {"CLIP_LAB_DATA_DIRS": str(shapes_set.parent), "OMP_NUM_THREADS": "1", "CLIP_LAB_MAX_EXPLORE_ROWS": "300"}
    with running_app(env) as url:
        yield url


def test_a_set_is_opened_and_searched_through_the_api(app, shapes_set, bundled):
    from core.encode import encode_texts

    c = Client(app, verbose=False)
    fig, status, summary, gallery = c.predict(str(shapes_set), "PCA", 15, 0.1, api_name="/explore_set")
    assert "300 images and 300 captions" in status and "shapes-tiny" in status
    plot = fig["plot"] if isinstance(fig, dict) else fig
    assert "scattergl" in str(plot) and "bdata" in str(plot)  # typed arrays, not lists of numbers
    fig, gallery, summary = c.predict("a red circle", None, 12, api_name="/explore_search")
    es = open_set(shapes_set)
    q = encode_texts(bundled, ["a red circle"])[0].numpy()
    expected = np.argsort(-(es.image_emb.astype(np.float64) @ q), kind="stable")[:12]
    shown = [int(r) for r in re.findall(r"data-row='(\d+)'", gallery)]
    assert shown == expected.tolist() and "12 images nearest to a red circle" in summary


@pytest.mark.parametrize("folder, message", [("by-another-model", "embedded by .* not by the session's model"),
                                             ("too-big", "320 rows; this app opens at most 300"),
                                             ("/etc", "only be opened from the allowed folders")])
def test_a_set_of_another_model_too_big_or_outside_the_allowed_folders_is_refused(app, shapes_set, folder, message):
    path = str(shapes_set.parent / folder) if not folder.startswith("/") else folder
    with pytest.raises(AppError, match=message):
        Client(app, verbose=False).predict(path, "PCA", 15, 0.1, api_name="/explore_set")
