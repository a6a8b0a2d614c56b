"""Training engine: spec, data, strategies, loop, calibration, evaluation and report."""
