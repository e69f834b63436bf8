"""The hostile load test's attackers on every tab (`python scripts/hostile_loadtest.py --tabs`).

Each attacker stays inside its own limits (one request in flight, well under the rate) and asks for
the most expensive valid work a tab allows, again and again:
- `evaluate`: the shapes world at 5,000 images with template selection and the few-shot probe;
- `search`: an index of 5,000 shapes-world images (a new seed each time: no cache helps);
- `map`: a UMAP map of 5,000 pairs (a new seed each time);
- `heads`: a 20,000-prompt zero-shot head (new templates each time);
- `train`: Train starts (one running and one waiting per visitor at most: the rest are refused);
- `callflood`: zero-shots posted to /gradio_api/call/ without reading the answers (the gate counts
  them in flight: after 4, 429).
A heavy request may be told that the server is busy: that is an expected refusal, not a failure.
"""

from __future__ import annotations

import time
from typing import Callable

BUSY = r"server is busy|busy with|cancelled at the end of the attack"
REFUSED_TABS = {
    "evaluate": BUSY,
    "search": BUSY,
    "map": BUSY,
    "heads": BUSY + r"|429|too many requests",  # three attackers at ~2 s a head pass the rate of 30 a minute
    "train": r"already have a run waiting|runs are already waiting|limit is",
    "callflood": r"429|limit is 4|too many requests",
}
TAB_ROLES = (["good"] * 2 + ["evaluate"] * 4 + ["search"] * 4 + ["map"] * 4 + ["heads"] * 3 + ["train"] * 3
             + ["callflood"] * 2)


def tab_attacks(url: str, live: Callable[[], bool], tally, call, star, handle_file, imagenet: str,
                big_templates: Callable[[], str], address: Callable[[int], str]) -> dict:
    """{role: attack(client, i)} for the tab attackers, and "cancel_all": a function that cancels every
    request still in flight when the attack ends (as closing their tabs would), so that the app's memory
    is read at rest afterwards. `call(tally, kind, fn, must_fail, refused_regex)` records one request's
    outcome (scripts/hostile_measure.py)."""
    import httpx

    jobs: list = []
    ended = []

    def result(c, **kwargs):
        job = c.submit(**kwargs)
        jobs.append(job)
        try:
            return job.result()
        except Exception as e:
            if ended:  # cancelled by cancel_all: counted as such, not as the app's error
                raise RuntimeError("cancelled at the end of the attack") from e
            raise

    def cancel_all() -> int:
        ended.append(True)
        pending = [job for job in jobs if not job.done()]
        for job in pending:
            try:
                job.cancel()
            except Exception:  # a job that ended meanwhile
                pass
        for c, ticket in tickets:  # the Train attackers stop their runs (else each runs until 5 minutes unwatched)
            try:
                c.predict(ticket=ticket, api_name="/train_stop")
            except Exception:  # a run refused, finished or pruned meanwhile
                pass
        return len(pending)

    def evaluate(c, i):
        seed = 0
        while live():
            seed += 1
            call(tally, "evaluate", lambda: result(c, n=5000, seed=seed, select_templates=True, linear_probe=True,
                                                      api_name="/evaluate"), False, REFUSED_TABS["evaluate"])

    def search(c, i):
        seed = 0
        while live():
            seed += 1
            call(tally, "search", lambda: result(c, n=5000, seed=1000 * i + seed, api_name="/search_index"), False,
                 REFUSED_TABS["search"])

    def map_(c, i):
        seed = 0
        while live():
            seed += 1
            call(tally, "map", lambda: result(c, n=5000, seed=1000 * i + seed, method="UMAP", api_name="/embedding_map"),
                 False, REFUSED_TABS["map"])

    def heads(c, i):
        while live():
            call(tally, "heads", lambda: result(c, image=handle_file(star), classnames=imagenet, templates=big_templates(),
                                                api_name="/zero_shot"), False, REFUSED_TABS["heads"])

    tickets: list = []  # (client, ticket) of every run the train attackers started

    def train(c, i):
        def start():
            out = c.predict(recipe="quick-demo", steps=5000, batch_size=512, api_name="/train_start")
            if isinstance(out, (list, tuple)) and isinstance(out[0], dict):
                tickets.append((c, out[0]))
            return out

        while live():
            call(tally, "train", start, False, REFUSED_TABS["train"])
            time.sleep(2.2)  # inside the rate of 30 a minute

    def callflood(c, i):
        params = httpx.get(f"{url}gradio_api/info", timeout=30).json()["named_endpoints"]["/zero_shot"]["parameters"]
        body = {"data": [p.get("parameter_default") for p in params]}
        while live():
            def post():
                r = httpx.post(f"{url}gradio_api/call/zero_shot", json=body, timeout=30,
                               headers={"X-Forwarded-For": address(i)})
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
            call(tally, "callflood", post, False, REFUSED_TABS["callflood"])
            time.sleep(2.2)

    return {"evaluate": evaluate, "search": search, "map": map_, "heads": heads, "train": train, "callflood": callflood,
            "cancel_all": cancel_all}
