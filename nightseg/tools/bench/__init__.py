"""The benchmark behind python -m nightseg.bench: timing, model builders, onnxruntime rows."""
