"""Image classification: one class per image, a ConvNeXt classifier, scored by top-1/top-5 accuracy.

`data` loads and checks labelled images (a label column of lists makes them multi-label), `model` the classifier a run
starts from, `hooks` what train, evaluate and the demo call (see `convnext_hf.tasks`).
"""
