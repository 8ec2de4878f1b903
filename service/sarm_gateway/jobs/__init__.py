"""RA-BC jobs: weights for a whole dataset, computed in the background with progress, results and cancel."""
