"""Reward-Aligned Behaviour Cloning: per-frame progress of a dataset and the sample weights it yields."""
