"""The Similarity-matrix tab."""
