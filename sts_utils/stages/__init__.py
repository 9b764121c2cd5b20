"""Layer 3, the stages: what the notebooks call, one module per stage (imports layers 0-2)."""
