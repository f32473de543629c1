"""Measuring models and poems: losses, the evaluation suite, readers, calibration."""
