"""The Evaluate tab: labelled sets from zips, CSVs and datasets (bounded before reading), its pure view
logic, and the running app's /evaluate endpoint through gradio_client, with transformers'
zero-shot-image-classification pipeline as the oracle for an uploaded ImageFolder zip."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest_app import ROOT, model_source, running_app

from core.data import DataError
from core.errors import UserInputError
from core.shapes import ShapesWorld
from demo.inputs import labelled_sets as ls
from demo.tabs.evaluate import study as ev

ONE = "a photo of a {}."


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def samples(n: int, seed: int = 5):
    return ShapesWorld(seed=seed, split="eval", min_objects=1, max_objects=1).take(n)


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def image_folder_zip(path: Path, n: int = 200, seed: int = 5) -> Path:
    """An ImageFolder zip of shapes-world images: mydata/<shape>/<index>.png, plus files to ignore."""
    members = {f"mydata/{s.labels['shape']}/{s.index}.png": png(s.image) for s in samples(n, seed)}
    members.update({"mydata/README.txt": b"not an image", "__MACOSX/mydata/._x.png": b"junk", "mydata/.DS_Store": b""})
    return write_zip(path, members)


# ---------------------------------------------------------------- labelled sets, without a server

def test_an_image_folder_zip_gives_folder_classes_under_a_common_root(tmp_path):
    s = ls.zip_set(image_folder_zip(tmp_path / "set.zip", 40))
    classes, y = s.tasks["label"]
    assert classes == sorted({x.labels["shape"] for x in samples(40)}) and len(s.names) == 40 and s.captions is None
    assert all(classes[k] == name.split("/")[1] for k, name in zip(y, s.names))  # the folder under 'mydata' is the class
    assert s.read(0).mode == "RGB" and "class folders" in s.description


def test_a_zip_with_labels_csv_in_a_folder(tmp_path):
    sm = samples(6)
    members = {f"data/img/{i}.png": png(x.image) for i, x in enumerate(sm)}
    members["data/labels.csv"] = ("filename,label\n" + "".join(f"img/{i}.png,{x.labels['colour']}\n" for i, x in enumerate(sm))).encode()
    s = ls.zip_set(write_zip(tmp_path / "c.zip", members))
    classes, y = s.tasks["label"]
    assert [classes[k] for k in y] == [x.labels["colour"] for x in sm] and "labels.csv" in s.description


@pytest.mark.parametrize("members, kwargs, message", [
    ({"../evil/a.png": b"x", "ok/b.png": b"x"}, {}, "unsafe path"),
    ({"/etc/a.png": b"x", "ok/b.png": b"x"}, {}, "unsafe path"),
    ({"a\\..\\..\\b.png": b"x"}, {}, "unsafe path"),
    ({f"c{i % 2}/{i}.png": b"x" for i in range(5)}, {"max_images": 4}, "5 images; the limit is 4"),
    ({"a/1.png": b"\0" * 5000, "b/1.png": b"\0" * 5000}, {"max_bytes": 8000}, "uncompressed"),
    ({"readme.txt": b"hi"}, {}, "no images"),
    ({"cat/1.png": b"x", "dog/1.png": b"x", "loose.png": b"x"}, {}, "not inside a class folder"),
    ({"only/1.png": b"x", "only/2.png": b"x"}, {}, "one class folder"),
    ({"1.png": b"x", "labels.csv": b"filename,label\n1.png,a\n2.png,b\n"}, {}, "'2.png', which is not an image"),
])
def test_zip_refusals_before_any_image_is_decoded(tmp_path, members, kwargs, message):
    with pytest.raises(DataError, match=re.escape(message) if "'" in message else message):
        ls.zip_set(write_zip(tmp_path / "z.zip", members), **kwargs)


def test_a_zip_member_larger_than_it_declares_is_cut_off(tmp_path):
    """The reader stops at the limit whatever the header says (a forged file_size cannot get more through)."""
    path = write_zip(tmp_path / "z.zip", {"a/1.png": b"\0" * 10_000})
    with zipfile.ZipFile(path) as z, pytest.raises(DataError, match="over the limit"):
        ls._read_member(z, z.infolist()[0], 1000)


def test_a_member_that_lies_about_its_size_is_refused_before_it_inflates(tmp_path):
    """A member whose directory entry declares 1 KB but which inflates to 64 MB is refused after at most
    about one read chunk (1 MB) was inflated: never the 64 MB, nor the set's 256 MB budget."""
    import tracemalloc

    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/1.png", b"\0" * (64 << 20))
        z.writestr("b/2.png", b"x")
        z.filelist[0].file_size = 1024  # the central directory, which readers trust, now lies
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="cannot be read|larger than its header says"):
            ls.zip_set(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MB were allocated for a 1 KB member"


def test_not_a_zip_is_one_line(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="not a readable zip"):
        ls.zip_set(tmp_path / "x.zip")


@pytest.mark.parametrize("text, rows", [
    ("filename,label\na.png,cat\nb.png,dog\n", [("a.png", "cat"), ("b.png", "dog")]),
    ("Label,File\ncat,a.png\n", [("a.png", "cat")]),  # any order, any case
    ("\ufeffimage,class,extra\na.png,cat,1\n\n", [("a.png", "cat")]),  # a BOM, extra columns, blank lines
    ("a.png,cat\nsub\\b.jpg,dog\n", [("a.png", "cat"), ("sub/b.jpg", "dog")]),  # no header
])
def test_labels_csv_layouts(text, rows):
    assert ls.parse_labels_csv(text.encode()) == rows


@pytest.mark.parametrize("data, message", [
    (b"name;label\n", "needs a header"),
    (b"filename,label\na.png,cat\na.png,dog\n", "twice"),
    (b"filename,label\na.png,\n", "lacks a file name or a label"),
    (b"filename,label\n" + b"a.png,cat\n" * 3, "limit"),
    (b"\xff\xfe\x00bad", "UTF-8"),
    (b"filename,label\n" + b"x" * (ls.MAX_CSV_BYTES + 1), "bytes; the limit"),
])
def test_labels_csv_refusals(data, message):
    with pytest.raises(DataError, match=message):
        ls.parse_labels_csv(data, max_rows=2)


def test_image_files_with_a_labels_csv(tmp_path):
    sm = samples(4)
    paths = []
    for i, x in enumerate(sm):
        (tmp_path / f"{i}.png").write_bytes(png(x.image))
        paths.append(str(tmp_path / f"{i}.png"))
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(f"{i}.png,{x.labels['shape']}\n" for i, x in enumerate(sm)))
    s = ls.upload_set(paths + [str(tmp_path / "labels.csv")])
    classes, y = s.tasks["label"]
    assert [classes[k] for k in y] == [x.labels["shape"] for x in sm] and s.names == [f"{i}.png" for i in range(4)]
    with pytest.raises(DataError, match="exactly one labels.csv"):
        ls.upload_set(paths)
    with pytest.raises(UserInputError, match="not both"):
        ls.upload_set(paths + [str(image_folder_zip(tmp_path / "z.zip", 4))])


def test_a_dataset_with_a_class_label_column_names_its_classes(tmp_path):
    import datasets

    sm = samples(12)
    names = ["circle", "square", "triangle", "star", "heart", "cross", "diamond", "hexagon"]
    ds = datasets.Dataset.from_dict({"image": [x.image for x in sm], "label": [names.index(x.labels["shape"]) for x in sm],
                                     "text": [x.caption for x in sm]})
    ds = ds.cast_column("image", datasets.Image()).cast_column("label", datasets.ClassLabel(names=names))
    ds.save_to_disk(str(tmp_path / "d"))
    spec = ls.SetSpec("datasets source", 12, 0, dataset=str(tmp_path / "d"), caption_column="text")
    s = ls.dataset_set(spec, [tmp_path])
    classes, y = s.tasks["label"]
    assert classes == names and sorted(classes[k] for k in y) == sorted(x.labels["shape"] for x in sm)
    assert s.captions and len(s.captions) == 12 and s.read(0).size == (64, 64)
    with pytest.raises(DataError, match="no column 'caption'"):
        ls.dataset_set(ls.SetSpec("datasets source", 4, dataset=str(tmp_path / "d"), caption_column="caption"), [tmp_path])


# ---------------------------------------------------------------- the view logic, without a server

def test_prompt_names_rename_clean_and_refuse_collisions():
    names, notes = ev.prompt_names_for(["crane", "sailing_boat", "cat"], "crane = crane (bird)\n\n dog = hound \n")
    assert names == ["crane (bird)", "sailing boat", "cat"] and "'dog'" in notes[0]
    with pytest.raises(UserInputError, match="both be prompted as 'cat'"):
        ev.prompt_names_for(["crane", "cat"], "crane = cat")
    with pytest.raises(UserInputError, match="set name = prompt name"):
        ev.prompt_names_for(["crane", "cat"], "crane -> bird")


@pytest.fixture(scope="module")
def evaluation():
    """An Evaluation built by hand from fake embeddings: 3 classes, class 2 often taken for class 0."""
    from core.eval_study import run_study

    rng = np.random.default_rng(0)
    d, c = 16, 3
    centres = np.eye(c, d)
    y = np.repeat(np.arange(c), 20)
    img = centres[y] + 0.3 * rng.standard_normal((len(y), d))
    img[y == 2] += 0.9 * centres[0]  # class 2 drifts towards class 0
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    emb = np.stack([centres, centres + 0.05 * rng.standard_normal((c, d))])  # [T, C, D]
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)

    import torch
    from PIL import Image

    from demo.inputs.images import pack

    enc = ls.EncodedSet([f"#{i}" for i in range(len(y))], {"label": (["a", "b", "c"], y.tolist())}, "fake",
                        torch.tensor(img, dtype=torch.float32), [pack(Image.new("RGB", (8, 8)))] * len(y))
    e = ev.evaluate(enc, None, ["a", "b", "c"], emb, ["t1 {}", "t2 {}"], 10.0, "m", True, True)
    study = run_study(img, y, emb, ["t1 {}", "t2 {}"], ["a", "b", "c"])
    assert e.study.ensemble_accuracy == study.ensemble_accuracy
    return e


def test_the_heatmap_is_row_normalised_in_confusion_order_with_counts(evaluation):
    fig = ev.confusion_figure(evaluation)
    h = fig.data[0]
    order = evaluation.study.order
    assert list(h.x) == list(h.y) == [evaluation.prompt_names[i] for i in order]
    conf = np.asarray(evaluation.study.confusion)
    np.testing.assert_array_equal(np.asarray(h.customdata), conf[np.ix_(order, order)])
    np.testing.assert_allclose(np.asarray(h.z).sum(1), 1.0)
    assert "of its images" in h.hovertemplate
    assert abs(order.index(0) - order.index(2)) == 1  # the confused pair sits together


def test_the_heatmap_of_many_classes_keeps_the_most_confused(evaluation):
    fig = ev.confusion_figure(evaluation, max_classes=2)
    assert len(fig.data[0].x) == 2 and "2 of 3 classes" in fig.layout.title.text


def test_galleries_tables_and_files(evaluation, tmp_path):
    wrong, right = ev.gallery_items(evaluation)
    assert wrong and right and all(t != p for _, t, p, _ in wrong) and all(t == p for _, t, p, _ in right)
    assert [x[3] for x in wrong] == sorted((x[3] for x in wrong), reverse=True)  # most confident first
    assert {t for _, t, _, _ in right} <= {t for _, t, _, _ in wrong}  # the same true classes, for contrast
    html_wrong, html_right = ev.galleries(evaluation)
    assert html_wrong.count("<figure>") == len(wrong) and 'class="small"' in html_wrong and " → " in html_wrong
    named = dataclasses.replace(evaluation, prompt_names=["<script>x</script>", "b", "c"])
    assert "<script>" not in "".join(ev.galleries(named)) and "&lt;script&gt;" in "".join(ev.galleries(named))
    frame = ev.templates_frame(evaluation)
    assert frame["template"].iloc[-2] == "ENSEMBLE of all 2" and frame["template"].iloc[-1].startswith("CHOSEN")
    paths = [Path(x) for x in ev.write_downloads(evaluation, tmp_path / "out")]
    assert [x.name for x in paths] == ["evaluate_results.json", "evaluate_per_class.csv", "evaluate_predictions.csv",
                                       "chosen_templates.txt"]
    data = json.loads(paths[0].read_text())  # standard JSON: no NaN
    json.dumps(data, allow_nan=False)
    assert data["metrics"]["top1"] == pytest.approx(evaluation.metrics["top1"]) and data["study"]["probe"]["points"]
    rows = list(csv.DictReader(io.StringIO(paths[2].read_text())))
    assert len(rows) == len(evaluation.labels)
    assert np.mean([r["correct"] == "1" for r in rows]) == pytest.approx(evaluation.metrics["top1"])
    assert ev.probe_figure(evaluation).layout.xaxis.type == "log"


def test_downloaded_csv_cells_never_start_a_formula(evaluation, tmp_path):
    """Class and file names like `=cmd|...` or `@SUM(1)` reach a spreadsheet as text (a leading
    apostrophe); numbers, negative ones included, stay numbers."""
    hostile = ["=cmd|' /C calc'!A0", "+HYPERLINK(\"http://x\")", "@SUM(1)"]
    names = ["-2+3.png"] + list(evaluation.names[1:])
    e = dataclasses.replace(evaluation, prompt_names=hostile, names=names)
    paths = [Path(x) for x in ev.write_downloads(e, tmp_path / "out")]
    for path in paths[1:3]:
        for row in csv.reader(io.StringIO(path.read_text())):
            for cell in row:
                assert not cell.startswith(ev.FORMULA_STARTS) or re.fullmatch(r"-?[0-9.e+-]+", cell), (path.name, cell)
    rows = list(csv.DictReader(io.StringIO(paths[2].read_text())))
    assert rows[0]["image"] == "'-2+3.png" and {r["true"] for r in rows} <= {"'" + h for h in hostile}


# ---------------------------------------------------------------- the running app

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

OUTPUTS = ("summary", "classes", "confusion", "mistakes", "correct", "selection", "templates", "probe", "downloads", "data",
           "preset", "calibration", "reliability", "risk", "several", "several_table")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    data = root / "data"
    data.mkdir()
    from conftest_app import save_shapes_dataset

    save_shapes_dataset(data / "tiny", n=24)
    with running_app({"CLIP_LAB_DATA_DIRS": str(data), "OMP_NUM_THREADS": "1"}) as url:
        yield url, root


@pytest.fixture(scope="module")
def client(app):
    return Client(app[0], verbose=False)


def evaluate(c, **kw) -> dict:
    return dict(zip(OUTPUTS, c.predict(api_name="/evaluate", **kw)))


def read_downloads(out: dict) -> dict[str, str]:
    return {Path(f).name: Path(f).read_text() for f in out["downloads"]}


def test_calibration_on_an_uploaded_zip_is_what_the_per_image_csv_recomputes(client, app):
    """The reported ECE (before and after the fitted scale) equals a recomputation from the downloaded per-image
    CSV over its evaluation half; the conformal sets' report and the unknown classes are stated beside them."""
    path = image_folder_zip(app[1] / "calibration.zip", 240, seed=9)
    out = evaluate(client, source="uploaded zip or files", files=[handle_file(str(path))], select_templates=False,
                   linear_probe=False, coverage="80%")
    report = out["data"]["calibration"]
    rows = list(csv.DictReader(io.StringIO(read_downloads(out)["evaluate_predictions.csv"])))
    held = [r for r in rows if r["half"] == "evaluation"]
    assert len(held) == report["calibration"]["n_evaluation"] and len(rows) == 240

    def ece(conf, correct, bins=15):  # NumPy: equal-width bins over (0, 1], weighted |accuracy - confidence|
        conf, correct = np.array(conf, float), np.array(correct, float)
        which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
        return sum(abs(correct[which == b].mean() - conf[which == b].mean()) * (which == b).mean()
                   for b in range(bins) if (which == b).any())

    correct = [int(r["correct"]) for r in held]
    assert report["calibration"]["before"]["ece"] == pytest.approx(ece([r["p(predicted)"] for r in held], correct), abs=1e-5)
    assert report["calibration"]["after"]["ece"] == pytest.approx(
        ece([r["p(predicted) at the fitted scale"] for r in held], correct), abs=1e-5)
    ab = report["abstention"]
    assert ab["target_coverage"] == pytest.approx(0.8) and len(ab["unknown_classes"]) == 2  # a quarter of 8 shapes
    text = out["calibration"]
    assert f"{report['calibration']['fitted_scale']:.2f}" in text and "15 equal-width bins" in text
    assert "stated coverage of 80%" in text and "Unknown images" in text and out["reliability"] and out["risk"]
    with pytest.raises((AppError, httpx.HTTPStatusError)):  # the menu's choices only
        evaluate(client, source="shapes world", n=40, coverage="99%")


def test_an_uploaded_image_folder_zip_matches_the_transformers_pipeline(client, app):
    """Top-1 on an uploaded ImageFolder zip is the pipeline's on the same images and template, to 0.5%,
    and so is each image's prediction."""
    import torch
    from PIL import Image
    from transformers import pipeline

    from core.model import MODELS_DIR

    path = image_folder_zip(app[1] / "shapes.zip", 200)
    out = evaluate(client, source="uploaded zip or files", files=[handle_file(str(path))], templates=ONE,
                   select_templates=False, linear_probe=False)
    data = out["data"]
    assert data["n"] == 200 and data["templates"] == [ONE] and data["model"] == model_source()
    ours = {r["image"]: r["predicted"] for r in csv.DictReader(io.StringIO(read_downloads(out)["evaluate_predictions.csv"]))}
    source = model_source()
    pipe = pipeline("zero-shot-image-classification", model=str(MODELS_DIR / source if not Path(source).is_dir() else source),
                    dtype=torch.float32)
    theirs, hits = {}, 0
    with zipfile.ZipFile(path) as z:
        for name in (n for n in z.namelist() if n.startswith("mydata/") and n.endswith(".png")):
            image = Image.open(io.BytesIO(z.read(name))).convert("RGB")
            theirs[name] = pipe(image, candidate_labels=data["classnames"], hypothesis_template=ONE)[0]["label"]
            hits += theirs[name] == name.split("/")[1]
    assert data["metrics"]["top1"] == pytest.approx(hits / len(theirs), abs=0.005)
    assert np.mean([ours[k] == v for k, v in theirs.items()]) >= 0.995
    assert "Top-1" in out["summary"] and out["selection"].startswith("Forward selection was not run")


def test_the_shapes_world_study_end_to_end(client):
    out = evaluate(client, n=400, label="colour × shape")
    data = out["data"]
    assert data["num_classes"] == 64 and data["n"] == 400 and data["label"] == "combo"
    assert out["preset"] == "shapes world" and len(data["templates"]) == 6
    assert "Retrieval with the set's captions" in out["summary"] and data["retrieval"]["image_to_text_R@1"] > 0.2
    sel, probe = data["study"]["selection"], data["study"]["probe"]
    assert sel["chosen_templates"] and "Forward selection" in out["selection"] and probe["zero_shot"] is not None
    assert [p["label"] for p in probe["points"]][-1] == "all"
    assert len(out["classes"]["data"]) == 64 and out["confusion"] and out["probe"]
    assert out["templates"]["data"][-1][0].startswith("CHOSEN")
    files = read_downloads(out)
    assert files["chosen_templates.txt"].splitlines() == sel["chosen_templates"]
    assert json.loads(files["evaluate_results.json"])["metrics"] == data["metrics"]
    assert len(list(csv.reader(io.StringIO(files["evaluate_per_class.csv"])))) == 65
    assert all(0 < g.count("<figure>") <= 12 for g in (out["mistakes"], out["correct"]))


def test_renamed_classes_and_another_label_reuse_the_encoded_set(client):
    out = evaluate(client, n=400, label="shape", prompt_names="circle = round circle\nbogus = x",
                   select_templates=False, linear_probe=False)
    assert "round circle" in out["data"]["prompt_names"] and "'bogus'" in out["summary"]
    assert [r[0] for r in out["classes"]["data"]][0] == "circle" and out["classes"]["data"][0][1] == "round circle"


def test_a_datasets_source_with_captions(client, app):
    out = evaluate(client, source="datasets source", dataset=str(app[1] / "data" / "tiny"), n=24, label_column="shape",
                   caption_column="text", templates=ONE, linear_probe=False)
    assert out["data"]["n"] == 24 and out["data"]["retrieval"] and "Retrieval" in out["summary"]
    assert out["data"]["classnames"] == sorted(set(out["data"]["classnames"]))  # string labels: sorted distinct values


@pytest.mark.parametrize("kwargs, message", [
    (dict(source="uploaded zip or files"), "nothing uploaded"),
    (dict(source="uploaded zip or files", files="TRAVERSAL"), "unsafe path"),
    (dict(source="uploaded zip or files", files="IMAGE"), "labels.csv"),
    (dict(n=9000), "N must be|greater than maximum|between"),
    (dict(label="size"), "not one of|not in the list of choices"),
    (dict(templates="a photo of a"), "exactly one"),
    (dict(source="datasets source", dataset="/etc"), "allowed folders"),
    (dict(n=50, prompt_names="circle = square"), "both be prompted as 'square'"),
    (dict(n=50, label="colour × shape", several_labels=True), "several labels per image are scored on shapes-world"),
])
def test_bad_inputs_get_one_line(client, app, kwargs, message):
    root = app[1]
    if kwargs.get("files") == "TRAVERSAL":
        kwargs["files"] = [handle_file(str(write_zip(root / "bad.zip", {"../x/1.png": b"x", "a/1.png": b"x"})))]
    elif kwargs.get("files") == "IMAGE":
        (root / "one.png").write_bytes(png(samples(1)[0].image))
        kwargs["files"] = [handle_file(str(root / "one.png"))]
    with pytest.raises((AppError, httpx.HTTPStatusError)) as err:
        evaluate(client, **kwargs)
    said = err.value.response.text if isinstance(err.value, httpx.HTTPStatusError) else str(err.value)
    assert re.search(message, said), said


def test_the_endpoint_is_documented_and_has_a_stop(app, client):
    import urllib.request

    with urllib.request.urlopen(app[0] + "gradio_api/info", timeout=30) as r:
        ep = json.load(r)["named_endpoints"]["/evaluate"]
    params = {p["parameter_name"]: p["parameter_has_default"] for p in ep["parameters"]}
    assert all(params.values()) and {"source", "files", "prompt_names", "templates", "label"} <= set(params)
    assert client.predict(api_name="/stop_evaluate") == "stopped 0 job(s)"


def test_stop_ends_a_long_evaluation_within_a_batch(app):
    import time

    from conftest_app import wait_for_status
    from gradio_client.utils import Status

    c = Client(app[0], verbose=False)
    job = c.submit(n=5000, seed=7, api_name="/evaluate")  # 5,000 fresh images: many seconds of work
    wait_for_status(job, (Status.PROGRESS,))
    assert c.predict(api_name="/stop_evaluate") == "stopped 1 job(s)"
    stopped = time.monotonic()
    job.result(timeout=60)  # the job ends with its outputs unchanged
    assert time.monotonic() - stopped < 5.0
    assert evaluate(c, n=50, select_templates=False, linear_probe=False)["data"]["n"] == 50  # and the app serves on


def test_the_tab_and_scripts_evaluate_give_the_same_numbers(client, tmp_path):
    """The tab is a thin caller: on the same shapes-world images, templates and seed, /evaluate and
    `scripts/evaluate.py --select-templates --linear-probe --multilabel` report the same per-template accuracies,
    the same chosen templates, the same probe curve and the same several-labels mAP, F1 and thresholds."""
    import subprocess
    import sys

    out_json = tmp_path / "cli.json"
    done = subprocess.run([sys.executable, "scripts/evaluate.py", "--n", "300", "--seed", "5", "--study-seed", "5",
                           "--task", "shape", "--templates", "shapes_world", "--select-templates", "--linear-probe",
                           "--multilabel", "--json", str(out_json)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    cli_all = json.loads(out_json.read_text())
    cli = cli_all["study"]
    out = evaluate(client, n=300, seed=5, label="shape", several_labels=True)
    tab = out["data"]["study"]
    several, multi = out["data"]["several_labels"], cli_all["multilabel"]
    assert several["mAP"] == pytest.approx(multi["mAP"], abs=1e-6) and several["f1"] == pytest.approx(multi["f1"], abs=1e-6)
    assert several["thresholds"] == pytest.approx(multi["thresholds"], abs=1e-6) and several["score"] == "cosine"
    assert f"{100 * multi['mAP']:.1f}%" in out["several"] and "chosen for F1 on a calibration half" in out["several"]
    assert [r[0] for r in out["several_table"]["data"]] == multi["classes"]
    np.testing.assert_allclose(tab["template_accuracy"], cli["template_accuracy"], atol=1 / 300 + 1e-9)
    assert tab["selection"]["chosen"] == cli["selection"]["chosen"]
    for a, b in zip(tab["probe"]["points"], cli["probe"]["points"]):
        assert a["k"] == b["k"] and a["mean"] == pytest.approx(b["mean"], abs=0.02)
