"""Validation of samplers against the model itself (simulation-based calibration); sits above the samplers."""
