"""Paper's claims tab: each claim of the CLIP paper as an experiment (core/experiments/).

It opens on the bundled result of the chosen experiment (with the command and seeds that made it),
and "Run it yourself" re-runs the recipe's quick variant on this server, with progress and Stop.
"""

from __future__ import annotations

import gradio as gr

from core.errors import UserInputError
from core.experiments import DEFAULT_EXPERIMENT, bundled_result, experiment_names, load_experiment, run_experiment
from demo.platform.contract import Call, handler, listen, stop_button
from demo.tabs.claims.views import SUMMARY_COLUMNS, claim_figure, summary_frame, verdict_markdown


def _view(result: dict, whose: str) -> tuple:
    text = verdict_markdown(result, whose)
    quick = bundled_result(result["experiment"], quick=True) if not result["quick"] else None
    if quick is not None:
        text += (f"  \n*Run it yourself* re-runs the quick variant (seeds {', '.join(map(str, quick['ran']['seeds']))}): "
                 f"{quick['seconds']:.0f} s on the machine that made it.")
    return text, claim_figure(result), summary_frame(result), result


def _name(name: str | None) -> str:
    names = experiment_names()
    name = (name or "").strip() or (DEFAULT_EXPERIMENT if DEFAULT_EXPERIMENT in names else names[0])
    if name not in names:
        raise UserInputError(f"no experiment {name!r}; the experiments are {', '.join(names)}")
    return name


@handler("claims", turn=False)
def show_claim(call: Call, name: str | None = None):
    """The bundled result of one experiment: the paper's statement, our numbers with intervals, the verdict.

    Args:
        name: the experiment (e.g. objectives, prompt-ensembling, zero-shot-vs-probe, distribution-shift,
            temperature-and-batch, modality-gap); omitted: prompt-ensembling.
    """
    name = _name(name)
    result = bundled_result(name)
    if result is None:
        raise UserInputError(f"{name} has no bundled result yet: run `python scripts/experiment.py {name} --bundle`")
    return _view(result, "Our bundled result")


@handler("claims", cost="heavy")
def run_claim(call: Call, name: str | None = None):
    """Re-run an experiment's quick variant on this server (fewer images, seeds and conditions; the ones that
    train small models from scratch take minutes), with progress and Stop.

    Args:
        name: the experiment (e.g. objectives, prompt-ensembling, zero-shot-vs-probe, distribution-shift,
            temperature-and-batch, modality-gap); omitted: prompt-ensembling.
    """
    name = _name(name)
    result = run_experiment(load_experiment(name), quick=True, progress=call.report("running the quick variant", "runs"),
                            check=call.check)
    return _view(result, "Your run (the quick variant)")


def build_tab(ctx) -> tuple[gr.Dropdown, list]:
    """The paper's-claims tab. Returns its menu and outputs: the page load shows the default experiment's bundled result."""
    names = experiment_names()
    gr.Markdown("The CLIP paper's claims, tested in the shapes world at small scale: each is a recipe "
                "(`assets/experiments/`), a bundled result over several seeds with 95% intervals, and a verdict: "
                "reproduced, not reproduced at this scale, or reversed.")
    with gr.Row():
        name = gr.Dropdown(names, value=_name(None), label="Experiment", elem_id="claims-name", scale=3)
        run = gr.Button("Run it yourself (quick variant)", elem_id="claims-run", scale=2)
        stop = gr.Button("Stop", variant="stop", elem_id="claims-stop", scale=1)
    verdict = gr.Markdown(label="The claim and our verdict", elem_id="claims-verdict")
    plot = gr.Plot(label="Our numbers", elem_id="claims-plot")
    table = gr.Dataframe(headers=SUMMARY_COLUMNS, label="Every number, over the seeds", wrap=True, elem_id="claims-table")
    with gr.Accordion("The whole result (JSON)", open=False):
        data = gr.JSON(label="Result (JSON)", elem_id="claims-json")
    outputs = [verdict, plot, table, data]
    listen(ctx, name.input, show_claim, [name], outputs, api_name="show_claim")
    event = listen(ctx, run.click, run_claim, [name], outputs, api_name="run_claim", show_progress_on=[verdict])
    stop_button(ctx, stop, "claims", [event])
    return name, outputs
