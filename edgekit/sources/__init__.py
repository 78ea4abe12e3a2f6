"""Loading user models into a Model: torch factories, .pt2, TorchScript, ONNX, Keras."""
