"""The generic trainer: jitted steps on a device mesh, checkpoints, early stopping, logs."""
