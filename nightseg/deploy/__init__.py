"""Deployment: ONNX graphs of the trained models, their parity with PyTorch, int8 quantization and
the onnxruntime stand-ins for the PyTorch modules."""
