"""The Zero-shot tab."""
