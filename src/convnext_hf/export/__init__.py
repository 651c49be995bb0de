"""Deployment: export saved ConvNeXt folders to ONNX and OpenVINO, checked against PyTorch, optionally int8.

`convnext-hf export onnx|openvino --model DIR --output_dir OUTPUT_DIR` (see docs/deployment.md). The engines come
with the `export` extra: `pip install "convnext-hf[export]"`.
"""
