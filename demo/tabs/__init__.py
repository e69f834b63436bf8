"""One folder per tab: tab.py (layout and wiring) beside logic modules with no Gradio import."""
