"""Panels and logic more than one tab shows: the model picker, saliency, map figures, zero-shot scores."""
