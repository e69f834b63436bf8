"""PNG line plots for the benchmarks (plotly, exported with kaleido through the system Chromium).

    from benchmarks.plotting import save_line_plot
    save_line_plot("docs/x.png", {"ours": ([10, 100], [0.1, 0.3]), "reference": ([10, 100], [1.0, 9.0])},
                   title="Cost vs classes", x_label="classes", y_label="seconds", log_x=True, log_y=True)

kaleido (a benchmark-only dependency, in requirements-dev.txt) drives a headless Chromium; it is
pointed at /usr/bin/chromium (Debian's `chromium` package) unless BROWSER_PATH is already set. When
kaleido is missing or cannot start the browser, the figure is rendered as HTML and screenshotted
with Playwright's Python package in the same Chromium instead. Either way the PNG is written to a
temporary file first and renamed into place, so a failed export never leaves a broken image.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

SYSTEM_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def line_figure(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str = "", x_label: str = "",
                y_label: str = "", log_x: bool = False, log_y: bool = False):
    """A plotly Figure with one line (with markers) per series: {legend name: (xs, ys)}."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, (xs, ys) in series.items():
        fig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode="lines+markers", name=name))
    fig.update_layout(title=title, template="plotly_white", legend=dict(orientation="h", y=-0.2),
                      margin=dict(l=70, r=30, t=60, b=90))
    fig.update_xaxes(title_text=x_label, type="log" if log_x else "linear")
    fig.update_yaxes(title_text=y_label, type="log" if log_y else "linear")
    return fig


def save_line_plot(path: str | os.PathLike, series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                   title: str = "", x_label: str = "", y_label: str = "", log_x: bool = False, log_y: bool = False,
                   width: int = 900, height: int = 560) -> Path:
    """Write a PNG line plot of `series` to `path` and return the path.

    series: legend name -> (x values, y values), one line each, drawn in the order given.
    log_x / log_y: logarithmic axes. width, height: the image size in pixels.
    Raises RuntimeError when neither kaleido nor Playwright can render it.
    """
    fig = line_figure(series, title, x_label, y_label, log_x, log_y)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".png", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            _export_with_kaleido(fig, tmp, width, height)
        except Exception as kaleido_error:  # missing package, browser that will not start, export timeout
            try:
                _export_with_playwright(fig, tmp, width, height)
            except Exception as playwright_error:
                raise RuntimeError(f"could not render {target.name}: kaleido said {kaleido_error!r}; "
                                   f"playwright said {playwright_error!r}") from playwright_error
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _export_with_kaleido(fig, out: Path, width: int, height: int) -> None:
    """Plotly's own PNG export; kaleido finds the browser through BROWSER_PATH."""
    import kaleido  # noqa: F401  (fail fast, before plotly's longer message, when it is not installed)

    if not os.environ.get("BROWSER_PATH") and Path(SYSTEM_CHROMIUM).is_file():
        os.environ["BROWSER_PATH"] = SYSTEM_CHROMIUM
    fig.write_image(str(out), format="png", width=width, height=height)


def _export_with_playwright(fig, out: Path, width: int, height: int) -> None:
    """Render the figure's HTML (plotly.js inlined: no network) in headless Chromium and screenshot the plot."""
    from playwright.sync_api import sync_playwright

    html = fig.to_html(include_plotlyjs=True, full_html=True, default_width=f"{width}px", default_height=f"{height}px",
                       config={"staticPlot": True})
    with tempfile.TemporaryDirectory() as tmp_dir:
        page_path = Path(tmp_dir) / "figure.html"
        page_path.write_text(html, encoding="utf-8")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=SYSTEM_CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": width + 40, "height": height + 40})
                page.goto(page_path.as_uri())
                page.wait_for_selector(".main-svg")
                page.locator(".plotly-graph-div").first.screenshot(path=str(out))
            finally:
                browser.close()
