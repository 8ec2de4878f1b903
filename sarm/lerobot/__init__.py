"""LeRobot 0.6.1 SARM checkpoints: read them, reproduce their computation exactly, import them as ours.

config.py      LeRobot's config.json -> a typed config; what we cannot reproduce is refused by field name
modeling.py    the stage and subtask transformers with LeRobot's parameter names, and inference
normalizer.py  the preprocessor's MEAN_STD statistics for the state, and padding to max_state_dim
clip.py        CLIP features as LeRobot's processor computes them (CLIPProcessor, unnormalised projections)
windows.py     the centred window rule
scoring.py     LeRobot's compute_sarm_progress frame rule over a whole dataset
checkpoint.py  `sarm import lerobot`: the imported checkpoint folder, and loading it back
"""
