"""The embedded model server: Hugging Face pipelines and ONNX Runtime behind the Open Inference Protocol (KServe V2).

`python -m model_server` serves it; docs/architecture.md#routes says what it answers and why.
"""
