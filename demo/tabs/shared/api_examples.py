"""The API page's examples for file inputs: files this app serves, so every "Use via API" snippet runs as pasted.

Gradio's snippet for a file input uses the component's example (a GitHub URL of a bus photo, or a
PDF for gr.File), even when the component has a default: offline, the app's own default mode, the
snippet fails. Here a file input's example is one of the app's examples (assets/examples/): on a
Space its public URL (served through /gradio_api/file=, see app.py's allowed_paths), on this
machine its path; optional multi-file inputs get no example (the snippet passes None).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from gradio_client import handle_file

from demo.platform.config import EXAMPLES_DIR

EXAMPLE_IMAGE = EXAMPLES_DIR / "shapes_purple_star.png"


def served_example(component, config, path: Path = EXAMPLE_IMAGE):
    """Make the API page's example of a file input `path`: its URL where the app is public (a Space: the
    server fetches it), its path on this machine where the app is on loopback (Gradio refuses to fetch
    loopback URLs, and a client on this machine uploads the file); returns the component."""
    path = Path(path).resolve()
    local = urlparse(config.public_url).hostname in ("127.0.0.1", "localhost", "::1")
    where = str(path) if local else f"{config.public_url}/gradio_api/file={path}"
    # the snippet writes handle_file('<url>'): a file's "url" is what it shows, here the URL or the local path
    component.example_payload = lambda: {**handle_file(where), "url": where}
    component.example_value = lambda: where
    return component


def no_example(component):
    """Give an optional file input no example (the snippet passes None); returns the component."""
    component.example_payload = lambda: None
    component.example_value = lambda: None
    return component
