"""One home per task: each task's own code (data, augmentation, model, metrics, report) lives in its package here."""
