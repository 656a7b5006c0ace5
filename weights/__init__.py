"""Data package holding the embedded default model (config.json, model.safetensors, heads/, text/)."""
