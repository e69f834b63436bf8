"""Server time of one search query over an index of normalised image embeddings.

    OMP_NUM_THREADS=1 python benchmarks/search_latency.py [--n 10000] [--repeats 50] [--threads 1] \
        [--json benchmarks/results/search_latency.json]

For the B/32 width (512) and the bundled model's width, an index of --n random unit rows stands
in for encoded images (the cost of core.search does not depend on what the rows mean). One query
is core.search.combined_query (a text and an image, weighted) + search (k = 10) + cosine_histogram
over all N cosines, the work the Search tab's handler does once the query's text is encoded; the
text encoding with the bundled model is timed apart. Each figure is the median of --repeats calls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import machine_info, write_json  # noqa: E402


def median_ms(fn, repeats: int) -> tuple[float, float]:
    """(median, max) milliseconds of `repeats` calls of fn(), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/search_latency.json"))
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    import core
    from core.search import combined_query, cosine_histogram, cosines, search

    torch.set_num_threads(args.threads)
    clip = core.load(core.DEFAULT_MODEL)
    widths = {"B/32 width": 512, f"{core.DEFAULT_MODEL} width": clip.embed_dim}
    rows = []
    for label, d in widths.items():
        g = torch.Generator().manual_seed(0)
        index = F.normalize(torch.randn(args.n, d, generator=g), dim=-1).contiguous()  # [N, D]
        text, image = torch.randn(d, generator=g), index[123]

        def query():
            q = combined_query(text, image, text_weight=0.6)
            top = search(index, q, k=10)
            hist = cosine_histogram(cosines(index, q), bins=40)
            return top, hist

        search_ms, search_max = median_ms(lambda: search(index, combined_query(text, None), k=10), args.repeats)
        query_ms, query_max = median_ms(query, args.repeats)
        rows.append({"label": label, "dim": d, "n": args.n, "search_median_ms": search_ms, "search_max_ms": search_max,
                     "query_median_ms": query_ms, "query_max_ms": query_max})
        print(f"{label:<22} D={d:<4} N={args.n}: search {search_ms:6.2f} ms (max {search_max:.2f}), "
              f"query with histogram {query_ms:6.2f} ms (max {query_max:.2f})")
    encode_ms, _ = median_ms(lambda: core.encode_texts(clip, ["a red circle in the top left"]), args.repeats)
    print(f"encode one text with {core.DEFAULT_MODEL}: {encode_ms:.2f} ms")
    write_json(args.json, {**machine_info(), "repeats": args.repeats, "target_ms": 200,
                           "query_means": "combined_query + search(k=10) + cosine_histogram over all N",
                           "rows": rows, "encode_text_ms": {core.DEFAULT_MODEL: encode_ms}})


if __name__ == "__main__":
    main()
