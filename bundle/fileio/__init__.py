"""Prediction files: tabular inputs read in record batches and outputs written atomically."""
