"""Tools around the networks: engine benchmarks (``inceptionv4 bench``), ONNX / TorchScript /
exported-program export (``inceptionv4 export``) and Triton model repositories."""
