"""sigerlm-onnx: ONNX export, INT8/INT4 quantization and the onnxruntime runtime."""
