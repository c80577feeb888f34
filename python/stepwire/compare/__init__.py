"""Side-by-side benchmark of logging overhead: stepwire against W&B, MLflow, TensorBoard and ClearML."""
