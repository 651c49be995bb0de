"""Semantic segmentation: an UperNet on a ConvNeXt backbone, trained on image/mask pairs and scored by mean IoU.

`upernet` builds the model's configuration and processor (the converter's too), `model` the model a run starts from,
`data` the pairs and their augmentation, `scoring` the `convnext-hf evaluate` scorer, `plots` the prediction overlay,
`hooks` what train, evaluate and the demo call (see `convnext_hf.tasks`).
"""
