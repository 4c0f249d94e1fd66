"""Datasets: manifests of labelled audio, and offline speech synthesis to make them."""
