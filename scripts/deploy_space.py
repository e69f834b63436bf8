"""Deploy CLIP Lab to a Hugging Face Space: build a clean bundle, then push it.

    python scripts/deploy_space.py --space USER/NAME --hardware zero-gpu
    python scripts/deploy_space.py --space USER/NAME --hardware cpu-basic --dry-run /tmp/bundle

The bundle holds app.py, core/, demo/, assets/ and LICENSE, plus three generated files: a README.md
whose front matter configures the Space for that hardware, a requirements.txt for it, and a
.gitattributes that sends binaries and files over 10 MB to LFS/Xet. Tests, benchmarks, docs, runs
and caches stay out. `--dry-run DIR` writes the bundle to DIR and lists it, with no network.
Otherwise it creates the Space (or reuses it) and uploads the bundle as one commit, deleting
files a previous deploy left that the bundle no longer has. Rerun it to update the Space.

The token comes from $HF_TOKEN or `hf auth login` (huggingface_hub reads both). A refusal from
the Hub is one `error: ...` line that says what to do, and exit code 2. See docs/spaces.md.
What goes in the bundle, and each hardware's versions, is scripts/space_bundle.py.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script or imported as scripts.deploy_space

from scripts.space_bundle import (BUNDLE_PATHS, DEFAULT_PRELOAD, HARDWARE, HARDWARE_ALIASES, ROOT,  # noqa: E402,F401
                                  Hardware, UserError, build_bundle, format_listing, requirement_name)

# ---------------------------------------------------------------------------------------------
# Pushing


def _network_error_types() -> tuple[type, ...]:
    types: list[type] = [ConnectionError, TimeoutError]
    for mod, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                       ("requests", ("ConnectionError", "Timeout"))):
        try:
            m = __import__(mod)
        except ImportError:
            continue
        types += [getattr(m, n) for n in names if isinstance(getattr(m, n, None), type)]
        if mod == "requests":
            import requests.exceptions as rex
            types += [rex.ConnectionError, rex.Timeout]
    return tuple(types)


def explain_hub_error(e: BaseException, space: str, hw: Hardware) -> str | None:
    """One line that says what went wrong and what to do, or None for an unexpected error."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    if isinstance(e, LocalTokenNotFoundError):
        return "no Hugging Face token: run `hf auth login` or set HF_TOKEN to a token with write access"
    if isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        detail = (getattr(e, "server_message", None) or str(e)).strip().splitlines()
        detail = detail[0][:200] if detail else ""
        if status == 401:
            return ("the Hub refused the token (401 Unauthorized): run `hf auth login` or set HF_TOKEN "
                    "to a valid token with write access")
        if status == 402:
            return (f"hardware {hw.name} needs a paid plan (402 Payment Required): creating a Gradio Space on CPU "
                    "or GPU hardware needs PRO (or a Team/Enterprise org); a free account can host ZeroGPU "
                    "Spaces: use --hardware zero-gpu")
        if status == 403:
            return (f"the token may not write to {space.split('/')[0]} (403 Forbidden): use a write token "
                    "(`hf auth login`, or HF_TOKEN) for that user or an organization you belong to")
        if status == 404:
            return f"{space.split('/')[0]} is not a user or organization you can create Spaces in (404 Not Found)"
        if status == 409:
            return (f"{space} conflicts with an existing repository (409 Conflict): the name is taken (perhaps by "
                    "a model or dataset, or a Space with another SDK) or another commit is in flight; pick another "
                    "--space name, or retry")
        if status == 429:
            return "the Hub is rate-limiting this account (429 Too Many Requests): wait a few minutes and rerun"
        if status is not None and status >= 500:
            return f"the Hub failed ({status}): {detail}; rerun later"
        return f"the Hub refused the request ({status}): {detail}"
    if isinstance(e, _network_error_types()):
        first = str(e).strip().splitlines()
        return (f"could not reach the Hugging Face Hub ({type(e).__name__}: {first[0][:160] if first else 'no detail'}): "
                "check the network (or HF_ENDPOINT) and rerun; rerunning is safe")
    return None


def push(space: str, hw: Hardware, private: bool, preload: tuple[str, ...], source_url: str | None) -> str:
    """Create or reuse the Space, set its hardware, upload the bundle; returns the Space's URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    with tempfile.TemporaryDirectory(prefix="clip-lab-space-") as tmp:
        bundle = Path(tmp) / "bundle"
        rows = build_bundle(bundle, hw, preload, source_url)
        print(f"bundle: {len(rows)} files, {sum(r['size'] for r in rows) / 1e6:.1f} MB", flush=True)
        api.create_repo(space, repo_type="space", space_sdk="gradio", space_hardware=hw.flavor, exist_ok=True,
                        private=private)
        # create_repo leaves an existing Space's hardware as it was; ask for the new one if it differs.
        runtime = api.get_space_runtime(space)
        current = getattr(runtime, "requested_hardware", None) or getattr(runtime, "hardware", None)
        if current is not None and str(getattr(current, "value", current)) != hw.flavor:
            print(f"hardware: {current} -> {hw.flavor}", flush=True)
            api.request_space_hardware(space, hw.flavor)
        api.upload_folder(repo_id=space, repo_type="space", folder_path=str(bundle),
                          commit_message=f"Deploy CLIP Lab ({hw.name})",
                          delete_patterns=["*"])  # files a previous deploy left and this bundle lacks
    return f"https://huggingface.co/spaces/{space}"


SPACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    choices = sorted(HARDWARE) + sorted(HARDWARE_ALIASES)
    p = argparse.ArgumentParser(description="Build CLIP Lab's Space bundle and push it to the Hugging Face Hub.")
    p.add_argument("--space", required=True, metavar="USER/NAME", help="the Space's id, e.g. alice/clip-lab")
    p.add_argument("--hardware", required=True, choices=choices, metavar="HARDWARE",
                   help="zero-gpu (free accounts: up to 2), cpu-basic, cpu-upgrade (PRO), or a GPU flavor: "
                        + ", ".join(h for h in sorted(HARDWARE) if HARDWARE[h].kind == "gpu"))
    p.add_argument("--dry-run", metavar="DIR", type=Path, help="write the bundle to DIR and list it; no network")
    p.add_argument("--private", action="store_true", help="create the Space private")
    p.add_argument("--model", action="append", metavar="HUB_ID",
                   help=f"a Hub model to preload at build time (repeatable; default {', '.join(DEFAULT_PRELOAD)})")
    p.add_argument("--no-preload", action="store_true", help="preload no Hub model")
    p.add_argument("--source-url", metavar="URL", help="the repository link in the Space's README")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hw = HARDWARE[HARDWARE_ALIASES.get(args.hardware, args.hardware)]
    try:
        if not SPACE_ID.match(args.space):
            raise UserError(f"--space {args.space!r} is not USER/NAME (letters, digits, '-', '_', '.')")
        preload = () if args.no_preload else tuple(args.model or DEFAULT_PRELOAD)
        for m in preload:
            if not SPACE_ID.match(m):
                raise UserError(f"--model {m!r} is not a Hub id like openai/clip-vit-base-patch32")
        if args.dry_run is not None:
            rows = build_bundle(args.dry_run, hw, preload, args.source_url)
            print(format_listing(rows, args.dry_run, hw))
            return 0
        try:
            url = push(args.space, hw, args.private, preload, args.source_url)
        except UserError:
            raise
        except Exception as e:  # Hub refusals and network failures become one line; anything else is re-raised
            line = None if isinstance(e, BrokenPipeError) else explain_hub_error(e, args.space, hw)
            if line is None:
                raise
            raise UserError(line) from e
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"deployed: {url} ({hw.name}); the Space builds and restarts now (logs on its page)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
