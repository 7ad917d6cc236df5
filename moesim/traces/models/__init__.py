"""The model catalog: MoE model shapes (YAML files in this folder, config.json, GGUF) and their bytes and FLOPs."""
