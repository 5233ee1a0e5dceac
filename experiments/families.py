"""Model families (one per task): each maps its command-line flags to a task and its training defaults.

A family module provides DATASETS, TRAIN_DEFAULTS, `build_task(model, flags) -> (task, dataset_name,
model_overrides)`, `before_training(task, workdir, flags)`, `epoch_callback(task, workdir, flags)` and
`after_training(task, workdir, results, flags)`.
"""
from experiments import basket_completion, sequential_ctr

FAMILIES = {
    "sequential_ctr": sequential_ctr,
    "basket_completion": basket_completion,
}
