"""The embedded model server: Hugging Face pipelines behind the Open Inference Protocol (KServe V2 REST).

`python -m model_server` serves it; DESIGN.md §4 says what it answers and why.
"""
