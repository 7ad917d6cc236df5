"""Recording routing traces from a local Hugging Face MoE checkpoint (the `record` extra)."""
