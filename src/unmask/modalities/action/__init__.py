"""Action modality: the PushBlock environment and its expert, expert demonstrations as a LeRobotDataset, action
binning, and the action-chunk policy decoded by the shared core (``model.ActionPolicy``)."""
