"""Training: time splits, LightGBM, calibration, baselines, MLflow."""
