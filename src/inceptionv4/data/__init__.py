"""Datasets and Inception preprocessing (issue 4)."""
