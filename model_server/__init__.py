"""The embedded model server: Hugging Face pipelines and ONNX Runtime behind the Open Inference Protocol (KServe V2).

`python -m model_server` serves it; DESIGN.md §4 says what it answers and why.
"""
