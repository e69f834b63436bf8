"""The Evaluate tab's logic, free of Gradio: the study of an encoded set, and everything it shows.

`evaluate(...)` runs core.eval_study.run_study (confusion, per-class table, each template alone,
forward selection, linear probe) on the cached embeddings and keeps what the views need in an
`Evaluation`; the functions below turn it into the heatmap, galleries, tables, figures and files.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from core.errors import UserInputError
from core.families import probabilities
from core.eval_study import Study, ensemble, finite, row_normalise, run_study
from core.evaluate import retrieval_metrics, zero_shot_metrics
from core.zeroshot import parse_classnames
from demo.inputs.images import unpack

MAX_HEATMAP_CLASSES = 100  # more classes: the heatmap shows the 100 most confused ones
MAX_JSON_CONFUSION = 100  # the on-page JSON leaves out bigger confusion matrices (the download has them)
GALLERY = 12
CLASS_COLUMNS = ["class", "prompt name", "n", "recall", "precision", "most often taken for", "share"]
TEMPLATE_COLUMNS = ["template", "alone: all images %", "alone: selection half %", "alone: held-out half %", "chosen (step)"]


def prompt_names_for(classnames: list[str], text: str | None) -> tuple[list[str], list[str]]:
    """(the prompt name of each class, notices). A class is prompted by its name with '_' as spaces,
    unless a line 'set name = prompt name' of `text` renames it ('crane = crane (bird)')."""
    index = {c: i for i, c in enumerate(classnames)}
    names = [" ".join(c.replace("_", " ").split()) or c for c in classnames]
    unknown = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        old, eq, new = (x.strip() for x in line.partition("="))
        if not eq or not old or not new:
            raise UserInputError(f"{line.strip()[:80]!r}: write each rename as 'set name = prompt name'")
        if old in index:
            names[index[old]] = new
        else:
            unknown.append(old)
    cleaned = parse_classnames("\n".join(names))  # strips invisible characters, checks lengths, drops repeats
    if len(cleaned) != len(names):
        seen: dict[str, str] = {}
        for c, n in zip(classnames, names):
            if n.strip() in seen:
                raise UserInputError(f"classes {seen[n.strip()]!r} and {c!r} would both be prompted as {n.strip()!r}: "
                                     "rename one of them")
            seen[n.strip()] = c
        raise UserInputError("a prompt name is empty once invisible characters are removed: rename that class")
    notices = []
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:4]) + (" …" if len(unknown) > 4 else "")
        notices.append(f"ℹ️ {len(unknown)} rename(s) name no class of this set and were not used: {shown}")
    return cleaned, notices


@dataclass
class Evaluation:
    """One evaluation of an encoded set: the study, the metrics and per-image predictions."""

    model: str
    description: str
    label: str
    classnames: list[str]  # the set's
    prompt_names: list[str]
    templates: list[str]
    study: Study
    metrics: dict  # core.evaluate.zero_shot_metrics
    retrieval: dict | None
    names: list[str]
    labels: np.ndarray  # [N]
    pred: np.ndarray  # [N]
    p_pred: np.ndarray  # [N] probability of the prediction at the model's logit scale
    p_true: np.ndarray  # [N]
    thumbs: list[bytes]
    logit_scale: float
    notices: list[str] = field(default_factory=list)
    receipt: dict = field(default_factory=dict)  # what made these numbers (core.receipts.receipt)
    cosines: np.ndarray | None = None  # [N, C] each image with each class's ensemble head
    probs: np.ndarray | None = None  # [N, C] under the model's rule at its scale
    calibration: dict | None = None  # demo.tabs.evaluate.calibration.calibration_report
    several_labels: dict | None = None  # demo.tabs.evaluate.several_labels.several_labels_report


def evaluate(enc, label: str | None, prompt_names: list[str], template_emb, templates: list[str], logit_scale: float,
             model: str, select: bool = True, probe: bool = True, seed: int = 0, notices: list[str] | None = None,
             progress=None, logit_bias: float = 0.0, rule: str = "softmax") -> Evaluation:
    """The study of an EncodedSet (demo.inputs.labelled_sets) with template embeddings [T, C, D] of its classes."""
    kind, classnames, labels = enc.task(label)
    img = enc.image_emb.float()
    y = np.asarray(labels, dtype=np.int64)
    notices = list(notices or [])
    try:
        study = run_study(img, y, template_emb, templates, prompt_names, seed=seed, select=select, probe=probe,
                          progress=progress)
    except UserInputError as e:
        if not (select or probe):
            raise
        notices.append(f"ℹ️ Forward selection and the linear probe were skipped: {e}")
        study = run_study(img, y, template_emb, templates, prompt_names, seed=seed, select=False, probe=False)
    head = torch.from_numpy(ensemble(template_emb))  # [C, D]
    probs = probabilities(logit_scale * img @ head.T, rule, logit_bias)  # [N, C], the family's rule
    pred = probs.argmax(dim=1).numpy()
    rows = np.arange(len(y))
    retrieval = retrieval_metrics(img, enc.caption_emb.float()) if enc.caption_emb is not None else None
    return Evaluation(model, enc.description, kind, list(classnames), list(prompt_names), list(templates), study,
                      zero_shot_metrics(probs, y.tolist(), len(classnames)), retrieval, list(enc.names), y, pred,
                      probs.numpy()[rows, pred], probs.numpy()[rows, y], enc.thumbs, float(logit_scale), notices,
                      cosines=(img @ head.T).numpy(), probs=probs.numpy())


def pct(x) -> float | None:
    """A fraction as a percentage with 2 decimals; None for NaN."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(100 * float(x), 2)


def summary_markdown(e: Evaluation) -> str:
    m, c = e.metrics, len(e.classnames)
    lines = [f"**Top-1 {m['top1']:.1%}** · top-5 {m['top5']:.1%} · mean per-class recall {m['mean_per_class_recall']:.1%} "
             f"(chance {1 / c:.1%}) on {m['n']:,} images, {c} classes, an ensemble of {len(e.templates)} template(s); "
             f"model `{e.model}`.  \n**Set:** {e.description}" + (f"; label: {e.label}" if e.label != "label" else "") + "."]
    if e.retrieval:
        r = e.retrieval
        lines.append("**Retrieval with the set's captions:** image → text " +
                     ", ".join(f"R@{k} {r[f'image_to_text_R@{k}']:.1%}" for k in (1, 5, 10)) + "; text → image " +
                     ", ".join(f"R@{k} {r[f'text_to_image_R@{k}']:.1%}" for k in (1, 5, 10)) + ".")
    return "  \n".join(e.notices + lines)


def per_class_frame(e: Evaluation) -> pd.DataFrame:
    rows = [[e.classnames[r.index], r.name, r.n, pct(r.recall), pct(r.precision), r.top_confusion or "",
             pct(r.top_confusion_share) if r.top_confusion else None] for r in e.study.per_class]
    return pd.DataFrame(rows, columns=CLASS_COLUMNS)


def confusion_figure(e: Evaluation, max_classes: int = MAX_HEATMAP_CLASSES) -> go.Figure:
    """The row-normalised confusion matrix in confusion order (confused classes side by side), counts on hover."""
    conf = np.asarray(e.study.confusion, dtype=np.int64)  # [C, C], rows true
    keep, note = list(e.study.order), ""
    if len(keep) > max_classes:
        off = conf - np.diag(np.diag(conf))
        top = set(np.argsort(-(off.sum(0) + off.sum(1)), kind="stable")[:max_classes].tolist())
        keep = [i for i in keep if i in top]
        note = f" · the {max_classes} of {len(conf)} classes with the most confusions"
    share = row_normalise(conf)[np.ix_(keep, keep)]  # [k, k], each row a share of the class's images
    names = [e.prompt_names[i] for i in keep]
    small = len(keep) <= 20
    text = [[f"{v:.0%}" if v > 0 else "" for v in row] for row in share] if small else None
    fig = go.Figure(go.Heatmap(
        z=share, x=names, y=names, customdata=conf[np.ix_(keep, keep)].tolist(), zmin=0, zmax=1, colorscale="Blues",
        text=text, texttemplate="%{text}" if small else None, colorbar=dict(title="share of row", tickformat=".0%", thickness=12),
        hovertemplate="true: %{y}<br>predicted: %{x}<br>%{z:.1%} of its images (%{customdata:,})<extra></extra>"))
    side = min(900, max(420, 22 * len(keep) + 200))
    fig.update_layout(title=dict(text=f"each row: where one true class's images went (sums to 100%){note}", x=0.01,
                                 font=dict(size=14)), height=side,
                      margin=dict(l=10, r=10, t=50, b=10), xaxis=dict(title="predicted", side="bottom", tickangle=-45),
                      yaxis=dict(title="true", autorange="reversed"))
    if len(keep) > 40:
        fig.update_xaxes(tickfont=dict(size=8))
        fig.update_yaxes(tickfont=dict(size=8))
    return fig


GALLERY_CSS = """
.ev-grid {display: grid; grid-template-columns: repeat(auto-fill, minmax(112px, 1fr)); gap: 10px; padding-top: 30px}
.ev-grid figure {margin: 0; font-size: 0.85em; line-height: 1.3; text-align: center}
.ev-grid img {width: 100%; aspect-ratio: 1; object-fit: contain; border-radius: 6px; background: #f4f4f5;
              border: 1px solid #e5e7eb; box-sizing: border-box}
.ev-grid img.small {image-rendering: pixelated}
.ev-grid figcaption {margin-top: 3px; overflow-wrap: anywhere}
.ev-grid .p {color: #6b7280}
.ev-empty {color: #6b7280; font-size: 0.9em; padding-top: 30px}
"""


def gallery_items(e: Evaluation, k: int = GALLERY) -> tuple[list[tuple], list[tuple]]:
    """(the k most confident mistakes, a confidently correct image of each of their true classes), each as
    (image index, true class, predicted class, probability of the prediction)."""
    wrong = np.flatnonzero(e.pred != e.labels)
    wrong = wrong[np.argsort(-e.p_pred[wrong], kind="stable")][:k]
    right = np.flatnonzero(e.pred == e.labels)
    right = right[np.argsort(-e.p_pred[right], kind="stable")]
    wanted = list(dict.fromkeys(int(e.labels[i]) for i in wrong)) or list(dict.fromkeys(int(e.labels[i]) for i in right))
    best: dict[int, int] = {}
    for i in right:
        best.setdefault(int(e.labels[i]), int(i))
    row = lambda i: (int(i), int(e.labels[i]), int(e.pred[i]), float(e.p_pred[i]))  # noqa: E731
    return [row(i) for i in wrong], [row(best[c]) for c in wanted[:k] if c in best]


def gallery_html(e: Evaluation, items: list[tuple], empty: str) -> str:
    """A grid of thumbnails with their captions below (names escaped: they come from uploads)."""
    if not items:
        return f'<p class="ev-empty">{html.escape(empty)}</p>'
    cells = []
    for i, t, p, prob in items:
        blob = e.thumbs[i]
        small = " small" if max(unpack(blob).size) < 100 else ""
        src = "data:image/png;base64," + base64.b64encode(blob).decode() if blob[:4] == b"\x89PNG" else \
            "data:image/jpeg;base64," + base64.b64encode(blob).decode()
        verdict = (f"<b>{html.escape(e.prompt_names[t])}</b>" if t == p else
                   f"<b>{html.escape(e.prompt_names[t])}</b> → {html.escape(e.prompt_names[p])}")
        cells.append(f'<figure><img class="{small.strip()}" src="{src}" alt="{html.escape(e.names[i])}" '
                     f'title="{html.escape(e.names[i])}"><figcaption>{verdict}<br><span class="p">p {prob:.2f}</span>'
                     "</figcaption></figure>")
    return f'<div class="ev-grid">{"".join(cells)}</div>'


def galleries(e: Evaluation, k: int = GALLERY) -> tuple[str, str]:
    """The mistakes and the contrasting correct images, as HTML grids."""
    wrong, right = gallery_items(e, k)
    return (gallery_html(e, wrong, "No mistakes: every image is classified correctly."),
            gallery_html(e, right, "No image is classified correctly."))


def templates_frame(e: Evaluation) -> pd.DataFrame:
    """Each template alone next to the ensemble of all, and (with selection) on both halves, and the chosen set."""
    s = e.study.selection
    step = {t: n + 1 for n, t in enumerate(s.chosen)} if s else {}
    rows = [[t, pct(a), pct(s.per_template_selection[i]) if s else None, pct(s.per_template_heldout[i]) if s else None,
             step.get(i, "")] for i, (t, a) in enumerate(zip(e.templates, e.study.template_accuracy))]
    rows.append([f"ENSEMBLE of all {len(e.templates)}", pct(e.study.ensemble_accuracy), pct(s.full_selection) if s else None,
                 pct(s.full_heldout) if s else None, ""])
    if s:
        rows.append([f"CHOSEN ({len(s.chosen)} by forward selection)", None, pct(s.chosen_selection), pct(s.chosen_heldout), ""])
    return pd.DataFrame(rows, columns=TEMPLATE_COLUMNS)


def selection_markdown(e: Evaluation) -> str:
    s = e.study.selection
    if s is None:
        return "Forward selection was not run (tick it to choose templates on one half and score them on the other)."
    chosen = "\n".join(f"{n}. `{t}` (selection half after this step: {acc:.2%})"
                       for n, (t, acc) in enumerate(zip(s.chosen_templates, s.steps), start=1))
    return (f"**Forward selection** (greedy, as in OpenAI's prompt-engineering notebook) chose **{len(s.chosen)} of "
            f"{len(s.templates)}** templates on the selection half ({s.n_selection:,} images), in this order:\n\n"
            f"{chosen}\n\nOn the held-out half ({s.n_heldout:,} images): chosen **{s.chosen_heldout:.2%}**, all templates "
            f"{s.full_heldout:.2%}, the best single template (`{s.templates[s.best_single]}`) {s.single_heldout:.2%}. "
            f"Gain of the chosen set: **{100 * s.gain_over_full:+.2f}** points over all templates, "
            f"{100 * s.gain_over_single:+.2f} over the best single one (all over single: {100 * s.full_over_single:+.2f}).")


def probe_figure(e: Evaluation) -> go.Figure | None:
    """Linear-probe accuracy against examples per class (mean ± sd over draws), the all-data probe and zero-shot."""
    curve = e.study.probe
    if curve is None:
        return None
    fig = go.Figure()
    few = [p for p in curve.points if p.k is not None]
    if few:
        fig.add_trace(go.Scatter(x=[p.k for p in few], y=[100 * p.mean for p in few], mode="lines+markers",
                                 error_y=dict(type="data", array=[100 * p.std for p in few], visible=True),
                                 name=f"linear probe, k per class (mean ± sd of {curve.seeds} draws)", line_color="#4f46e5",
                                 hovertemplate="k = %{x}: %{y:.1f}%<extra></extra>"))
    ticks = [p.k for p in few]
    full = next((p for p in curve.points if p.k is None), None)
    if full is not None:
        x_all = full.n_train / max(curve.num_classes, 1)
        fig.add_trace(go.Scatter(x=[x_all], y=[100 * full.mean], mode="markers", marker=dict(symbol="star", size=14, color="#16a34a"),
                                 name=f"linear probe on all {full.n_train:,} training images: {full.mean:.1%}",
                                 hovertemplate=f"all ({x_all:.1f} per class): %{{y:.1f}}%<extra></extra>"))
        ticks.append(x_all)
    if curve.zero_shot is not None:
        fig.add_hline(y=100 * curve.zero_shot, line_dash="dash", line_color="#dc2626",
                      annotation_text=f"zero-shot, {len(e.templates)} template(s): {curve.zero_shot:.1%}",
                      annotation_position="bottom left")
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(dash="dash", color="#dc2626"), name="zero-shot"))
    skipped = f" (k = {', '.join(map(str, curve.skipped_ks))} skipped: too few training images in some class)" if curve.skipped_ks else ""
    fig.update_layout(title=dict(text=f"probes trained on the selection half ({curve.n_train_pool:,} images), all tested on "
                                      f"the held-out half ({curve.n_test:,}){skipped}", x=0.01, font=dict(size=14)),
                      xaxis=dict(type="log", title="training images per class", tickvals=ticks,
                                 ticktext=[str(t) if isinstance(t, int) else f"all (≈{t:.0f})" for t in ticks]),
                      yaxis=dict(title="held-out accuracy %", rangemode="tozero"), height=420,
                      legend=dict(orientation="h", y=-0.25), margin=dict(l=10, r=10, t=50, b=10))
    return fig


def result_data(e: Evaluation, for_page: bool = False) -> dict:
    """Every number of the evaluation (the page's copy leaves out confusion matrices over 100 classes)."""
    study = e.study.to_dict()
    if for_page and len(e.classnames) > MAX_JSON_CONFUSION:
        study["confusion"] = f"{len(e.classnames)} × {len(e.classnames)}: in the downloaded JSON"
    return finite({"model": e.model, "set": e.description, "label": e.label, "n": len(e.labels),
                   "num_classes": len(e.classnames), "logit_scale": e.logit_scale, "classnames": e.classnames,
                   "prompt_names": e.prompt_names, "templates": e.templates, "metrics": e.metrics,
                   "retrieval": e.retrieval, "study": study, "notices": e.notices, "receipt": e.receipt or None,
                   "calibration": calibration_data(e.calibration, for_page), "several_labels": e.several_labels})


def calibration_data(report: dict | None, for_page: bool) -> dict | None:
    """The calibration report for JSON: the page's copy leaves out the halves' indices and the risk curves."""
    if report is None or not for_page:
        return report
    c = {k: v for k, v in report["calibration"].items() if not k.endswith("_half")}
    ab = report.get("abstention")
    if ab:
        ab = {**ab, "risk_coverage": {k: {"area": v["area"]} for k, v in ab["risk_coverage"].items()}}
    return {"calibration": c, **{k: v for k, v in (("sets", report.get("sets")), ("abstention", ab)) if v}}


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def inert(cell):
    """A CSV cell that a spreadsheet shows as text: a string starting like a formula (=, +, -, @, tab,
    CR: a class name or file name such as `=cmd|...` or `@SUM(1)`) gets a leading apostrophe (OWASP's
    advice against CSV injection). Numbers pass unchanged."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def _csv(header: list[str], rows) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([inert(h) for h in header])
    writer.writerows([inert(c) for c in row] for row in rows)
    return buf.getvalue()


def per_class_csv(e: Evaluation) -> str:
    frame = per_class_frame(e)
    return _csv(list(frame.columns), frame.astype(object).where(frame.notna(), "").values.tolist())


def predictions_csv(e: Evaluation) -> str:
    """One row per image: its name, true class, prediction, the two probabilities, and whether it is right."""
    rows = [[name, e.prompt_names[t], e.prompt_names[p], f"{pp:.6f}", f"{pt:.6f}", int(t == p)]
            for name, t, p, pp, pt in zip(e.names, e.labels, e.pred, e.p_pred, e.p_true)]
    header = ["image", "true", "predicted", "p(predicted)", "p(true)", "correct"]
    if e.calibration is not None:
        from demo.tabs.evaluate.calibration import prediction_columns

        extra, cells = prediction_columns(e.calibration, len(rows), e.cosines)
        header, rows = header + extra, [r + c for r, c in zip(rows, cells)]
    return _csv(header, rows)


def write_downloads(e: Evaluation, folder: Path) -> list[str]:
    """The results as JSON and CSV (per class, per image), and the chosen templates as .txt, written to folder."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"evaluate_results.json": json.dumps(result_data(e), indent=1), "evaluate_per_class.csv": per_class_csv(e),
             "evaluate_predictions.csv": predictions_csv(e)}
    if e.study.selection is not None:
        files["chosen_templates.txt"] = "\n".join(e.study.selection.chosen_templates) + "\n"
    for name, content in files.items():
        (folder / name).write_text(content, encoding="utf-8")
    return [str(folder / name) for name in files]
