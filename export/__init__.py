"""Training and ONNX export for lmroute's routers: the only package that imports torch."""
