"""Evaluation study on embeddings: confusion matrix, per-class table, template forward selection.

Everything here works on precomputed, L2-normalised embeddings (NumPy arrays or torch tensors)
and integer labels, so it never encodes anything and caches nothing:

    img = encode_images(clip, pixels)                            # [N, D]
    emb = template_embeddings(clip, classnames, templates)       # [T, C, D]
    sel = forward_select_templates(img, y, emb, templates, seed=0)
    conf = confusion_matrix(y, predict(img, ensemble(emb)), len(classnames))
    rows = per_class_table(conf, classnames); order = confusion_order(conf)

The linear-probe curve lives in core/probe.py; `run_study` runs both on one split (the selection
half trains the probe, the held-out half tests it), which is what the CLI and the tab call.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .errors import UserInputError

if TYPE_CHECKING:
    from .probe import ProbeCurve

Progress = Callable[[int, int], None]


def finite(value):
    """`value` for standard JSON: NaN and infinities as None, NumPy scalars as Python ones, recursively
    through dicts, lists and tuples (a study's dict has NaN where a class has no images)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _np(x) -> np.ndarray:
    """A float32 NumPy array from a NumPy array, a list or a torch tensor (no copy when already float32)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _labels(y, n: int | None = None) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    y = np.asarray(y, dtype=np.int64).ravel()
    if n is not None and len(y) != n:
        raise ValueError(f"{len(y)} labels for {n} embeddings")
    return y


# ---------------------------------------------------------------- confusion and per-class table

def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts [C, C] (int64): entry [i, j] is how many images of true class i were predicted j."""
    t, p = _labels(y_true), _labels(y_pred)
    if len(t) != len(p):
        raise ValueError(f"{len(t)} true labels but {len(p)} predictions")
    both = np.r_[t, p]
    bad = both[(both < 0) | (both >= num_classes)]
    if len(bad):
        raise UserInputError(f"class id {int(bad[0])} is outside 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def row_normalise(conf: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1 [C, C] (float64): row i is where class i's images went. Empty rows stay 0."""
    conf = np.asarray(conf, dtype=np.float64)
    sums = conf.sum(axis=1, keepdims=True)  # [C, 1]
    return np.divide(conf, sums, out=np.zeros_like(conf), where=sums > 0)


@dataclass
class ClassRow:
    """One class of a confusion matrix. recall (per-class accuracy) is NaN without images,
    precision is NaN when nothing was predicted as the class."""

    index: int
    name: str
    n: int  # images of this class
    correct: int
    predicted: int  # images predicted as this class
    recall: float
    precision: float
    top_confusion: str | None  # the class this one is most often mistaken for (None: never mistaken)
    top_confusion_index: int | None
    top_confusion_share: float  # fraction of this class's images predicted as top_confusion


def per_class_table(conf: np.ndarray, classnames: Sequence[str] | None = None) -> list[ClassRow]:
    """Per class: n, recall, precision and the top confusion, from counts [C, C] (rows = true)."""
    conf = np.asarray(conf, dtype=np.int64)
    c = conf.shape[0]
    names = list(classnames) if classnames is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for a {c}-class confusion matrix")
    off = conf.copy()
    np.fill_diagonal(off, 0)  # [C, C] mistakes only
    rows = []
    for i in range(c):
        n, correct, predicted = int(conf[i].sum()), int(conf[i, i]), int(conf[:, i].sum())
        j = int(off[i].argmax())  # lowest index on ties
        mistaken = off[i, j] > 0
        rows.append(ClassRow(i, names[i], n, correct, predicted,
                             correct / n if n else float("nan"), correct / predicted if predicted else float("nan"),
                             names[j] if mistaken else None, j if mistaken else None,
                             float(off[i, j] / n) if n else 0.0))
    return rows


def confusion_order(conf: np.ndarray) -> list[int]:
    """A permutation of the classes that puts mutually confused classes next to each other.

    Average-linkage clustering of the symmetrised row-normalised confusion (distance 1 - (R + R^T)/2
    off the diagonal), with scipy's optimal leaf ordering. Deterministic for a given matrix.
    """
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    r = row_normalise(conf)
    c = r.shape[0]
    if c <= 2:
        return list(range(c))
    dist = 1.0 - (r + r.T) / 2  # [C, C], in [0, 1]
    np.fill_diagonal(dist, 0.0)
    condensed = squareform(dist, checks=False)  # [C * (C - 1) / 2]
    z = linkage(condensed, method="average")
    return [int(i) for i in leaves_list(optimal_leaf_ordering(z, condensed))]


# ---------------------------------------------------------------- template study

def ensemble(template_emb, subset: Sequence[int] | None = None) -> np.ndarray:
    """The zero-shot head [C, D] of templates `subset` (default: all) of template_emb [T, C, D]:
    per class the renormalised mean of the normalised template embeddings (core.zeroshot.ensemble_head)."""
    emb = _np(template_emb)
    mean = emb[list(subset) if subset is not None else slice(None)].mean(axis=0)  # [C, D]
    return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


def predict(image_emb, head) -> np.ndarray:
    """Predicted class ids [N] of normalised image embeddings [N, D] under a head [C, D]."""
    return (_np(image_emb) @ _np(head).T).argmax(axis=1)


def accuracy(image_emb, labels, head) -> float:
    """Top-1 accuracy of a head [C, D] on image embeddings [N, D] with true labels [N]."""
    y = _labels(labels, len(image_emb))
    return float((predict(image_emb, head) == y).mean()) if len(y) else float("nan")


def template_accuracies(image_emb, labels, template_emb) -> np.ndarray:
    """Each template's accuracy used alone: [T]."""
    emb = _np(template_emb)
    return np.array([accuracy(image_emb, labels, emb[t]) for t in range(len(emb))])


def split_halves(labels, seed: int = 0, fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Indices (first, second) of a seeded split stratified by class: per class, about `fraction`
    of its images go to the first part (a class with one image goes to the first). Both sorted."""
    y = _labels(labels)
    rng = np.random.default_rng(seed)
    first = []
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        first.append(idx[: int(np.floor(len(idx) * fraction + 0.5))])
    a = np.sort(np.concatenate(first)) if first else np.empty(0, dtype=np.int64)
    return a, np.setdiff1d(np.arange(len(y)), a)


@dataclass
class TemplateSelection:
    """Greedy forward selection of templates: chosen on the selection half, scored on the held-out half."""

    templates: list[str]  # all T candidates
    chosen: list[int]  # indices into templates, in the order added
    steps: list[float]  # selection-half accuracy after each addition
    per_template_selection: list[float]  # [T] each template alone
    per_template_heldout: list[float]  # [T]
    best_single: int  # best template alone on the selection half: chosen[0], the greedy's first step
    chosen_selection: float
    chosen_heldout: float
    single_selection: float
    single_heldout: float
    full_selection: float  # all T templates
    full_heldout: float
    n_selection: int
    n_heldout: int
    seed: int

    @property
    def chosen_templates(self) -> list[str]:
        return [self.templates[i] for i in self.chosen]

    @property
    def gain_over_full(self) -> float:
        """Held-out accuracy of the chosen set minus that of all templates."""
        return self.chosen_heldout - self.full_heldout

    @property
    def gain_over_single(self) -> float:
        """Held-out accuracy of the chosen set minus that of the best single template."""
        return self.chosen_heldout - self.single_heldout

    @property
    def full_over_single(self) -> float:
        """Held-out accuracy of all templates minus that of the best single template."""
        return self.full_heldout - self.single_heldout

    def to_dict(self) -> dict:
        return {**asdict(self), "chosen_templates": self.chosen_templates, "gain_over_full": self.gain_over_full,
                "gain_over_single": self.gain_over_single, "full_over_single": self.full_over_single}


def _greedy(cos: np.ndarray, gram: np.ndarray, y: np.ndarray, max_count: int, progress: Progress | None):
    """Forward selection on cosines cos [T, N, C] (image n with template t of class c) and the per-class
    template Gram matrices gram [T, T, C]. The head of a set S is sum_{t in S} e_t / ||sum_{t in S} e_t||
    per class, so its logits are cos summed over S divided by sqrt(gram summed over S x S): no matmul per step."""
    t_count = cos.shape[0]
    chosen: list[int] = []
    steps: list[float] = []
    num = np.zeros(cos.shape[1:], dtype=np.float64)  # [N, C] sum of the chosen templates' cosines
    sq = np.zeros(cos.shape[2], dtype=np.float64)  # [C] squared norm of the sum of the chosen embeddings
    best = -1.0
    while len(chosen) < max_count:
        scores = np.full(t_count, -1.0)
        for t in range(t_count):
            if t in chosen:
                continue
            cross = 2 * gram[t, chosen].sum(axis=0) if chosen else 0.0  # [C]
            norm = np.sqrt(np.maximum(sq + cross + gram[t, t], 1e-24))  # [C]
            scores[t] = (((num + cos[t]) / norm).argmax(axis=1) == y).mean()  # [N, C] logits -> accuracy
        t = int(scores.argmax())  # the lowest index on ties
        if scores[t] <= best:  # nothing improves
            break
        sq += (2 * gram[t, chosen].sum(axis=0) if chosen else 0.0) + gram[t, t]
        num += cos[t]
        chosen.append(t)
        steps.append(float(scores[t]))
        best = scores[t]
        if progress is not None:
            progress(len(chosen), max_count)
    if progress is not None and len(chosen) < max_count:
        progress(max_count, max_count)
    return chosen, steps


def forward_select_templates(image_emb, labels, template_emb, templates: Sequence[str] | None = None, seed: int = 0,
                             max_templates: int | None = None, progress: Progress | None = None,
                             split: tuple[np.ndarray, np.ndarray] | None = None) -> TemplateSelection:
    """Greedy forward selection of prompt templates (OpenAI's prompt-engineering notebook).

    image_emb [N, D] and template_emb [T, C, D] normalised (core.zeroshot.template_embeddings), labels [N].
    The images are split by `split_halves(labels, seed)` (or `split`: (selection, held-out) indices).
    Starting from no template, each step adds the template that most raises the ensemble's accuracy
    on the selection half (ties: the earlier template); it stops when no template raises it or after
    max_templates. The chosen set, the best single template and the full set are scored on both halves.
    progress(done, max_templates) is called after each step. Memory: T x N_selection x C float64 cosines.
    """
    img, emb = _np(image_emb), _np(template_emb)
    y = _labels(labels, len(img))
    t_count = emb.shape[0]
    if t_count == 0:
        raise UserInputError("no templates to select from")
    names = list(templates) if templates is not None else [f"template {i}" for i in range(t_count)]
    if len(names) != t_count:
        raise ValueError(f"{len(names)} template names for {t_count} template embeddings")
    sel, held = split if split is not None else split_halves(y, seed)
    if len(sel) == 0 or len(held) == 0:
        raise UserInputError(f"{len(y)} images are too few to split into a selection and a held-out half")
    cos = np.einsum("nd,tcd->tnc", img[sel], emb, dtype=np.float64)  # [T, N_sel, C]
    gram = np.einsum("tcd,ucd->tuc", emb, emb, dtype=np.float64)  # [T, T, C]
    max_count = min(t_count, max_templates or t_count)
    chosen, steps = _greedy(cos, gram, y[sel], max_count, progress)

    def acc(idx, subset):
        return accuracy(img[idx], y[idx], ensemble(emb, subset))

    per_sel = template_accuracies(img[sel], y[sel], emb)
    per_held = template_accuracies(img[held], y[held], emb)
    single = chosen[0]
    return TemplateSelection(names, chosen, steps, per_sel.tolist(), per_held.tolist(), single,
                             acc(sel, chosen), acc(held, chosen), float(per_sel[single]), float(per_held[single]),
                             acc(sel, None), acc(held, None), len(sel), len(held), seed)


# ---------------------------------------------------------------- the whole study, for the CLI and the tab

def shapes_task(samples, task: str) -> tuple[list[str], list[int]]:
    """Class names and labels [N] of shapes-world samples for task 'colour', 'shape' or 'combo'
    (the class names of core.evaluate.evaluate_shapes)."""
    from .shapes import colour_classnames, combo_classnames, shape_classnames

    names = {"colour": colour_classnames, "shape": shape_classnames, "combo": combo_classnames}
    if task not in names:
        raise UserInputError(f"task {task!r} is not one of {', '.join(names)}")
    classes = names[task]()
    key = {"colour": lambda l: f"{l['colour']} shape", "shape": lambda l: l["shape"], "combo": lambda l: l["combo"]}[task]
    return classes, [classes.index(key(s.labels)) for s in samples]


@dataclass
class Study:
    """What run_study found. selection / probe are None when not asked for."""

    classnames: list[str]
    templates: list[str]
    template_accuracy: list[float]  # [T] each template alone, all images
    ensemble_accuracy: float  # all templates, all images
    confusion: list[list[int]]  # [C, C] of the full ensemble, all images
    per_class: list[ClassRow]
    order: list[int]  # confusion_order(confusion)
    selection: TemplateSelection | None = None
    probe: ProbeCurve | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("classnames", "templates", "template_accuracy", "ensemble_accuracy",
                                             "confusion", "order", "seed")}
        out["per_class"] = [asdict(r) for r in self.per_class]
        out["selection"] = self.selection.to_dict() if self.selection is not None else None
        out["probe"] = self.probe.to_dict() if self.probe is not None else None
        return out


def run_study(image_emb, labels, template_emb, templates: Sequence[str], classnames: Sequence[str], seed: int = 0,
              select: bool = True, probe: bool = True, ks: Sequence[int] = (1, 2, 4, 8, 16), seeds: int = 3,
              max_templates: int | None = None, progress: Progress | None = None) -> Study:
    """The full-ensemble confusion study on all images, plus (optionally) template forward selection
    and the linear-probe curve on one stratified split: `split_halves(labels, seed)` gives the
    selection half (it also trains the probe) and the held-out half (it tests both, and the
    zero-shot line of the probe is the full ensemble on it). progress(done, total) spans both parts.
    """
    from .probe import linear_probe_curve

    img, emb = _np(image_emb), _np(template_emb)
    y = _labels(labels, len(img))
    c = len(classnames)
    if emb.shape[:2] != (len(templates), c):
        raise ValueError(f"template embeddings {emb.shape[:2]} do not match {len(templates)} templates x {c} classes")
    head = ensemble(emb)  # [C, D]
    conf = confusion_matrix(y, predict(img, head), c)
    study = Study(list(classnames), list(templates), template_accuracies(img, y, emb).tolist(), accuracy(img, y, head),
                  conf.tolist(), per_class_table(conf, classnames), confusion_order(conf), seed=seed)
    split = split_halves(y, seed)
    parts = ([1.0] if select else []) + ([1.0] if probe else [])
    done_parts = 0

    def sub(done: int, total: int) -> None:
        if progress is not None:
            progress(int(1000 * (done_parts + done / max(total, 1))), 1000 * len(parts))

    if select:
        study.selection = forward_select_templates(img, y, emb, templates, seed, max_templates, sub, split)
        done_parts += 1
    if probe:
        sel, held = split
        study.probe = linear_probe_curve(img[sel], y[sel], img[held], y[held], ks=ks, seeds=seeds,
                                         zero_shot_head=head, progress=sub)
    return study
