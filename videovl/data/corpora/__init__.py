"""Synthetic corpora written as manifests: the built-in moving-digits demo and the check corpora."""
