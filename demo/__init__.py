"""CLIP Lab's Gradio UI: one module per tab, each exposing `build_tab(ctx)`; see app.py."""
