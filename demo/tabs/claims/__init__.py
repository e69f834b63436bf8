"""The paper's-claims tab: each claim of the CLIP paper as an experiment with a verdict."""
