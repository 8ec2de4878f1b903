"""SARM: stage-aware reward modeling — model, data, training, export and serving."""
