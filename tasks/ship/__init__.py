"""After the run: the demo app, exports (GGUF, ONNX), the OpenAI-compatible server, and the long-
running services. Never imports a stage.
"""
