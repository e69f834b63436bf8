"""CLIP Lab's Gradio app: platform/ (config, services, the handler contract), inputs/ (what visitors send)
and tabs/ (one folder per tab). See docs/tabs.md."""
