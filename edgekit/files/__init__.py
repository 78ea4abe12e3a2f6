"""The files edgekit reads and writes: ONNX and TFLite readers, graph size and cost, precision maps,
the one TensorFlow import, native output capture, atomic bundle folders."""
