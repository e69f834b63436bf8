"""The Embedding-map tab."""
