"""Object detection: a transformers DETR-family detector (RT-DETR by default) on the ConvNeXt backbone.

`data` reads COCO annotation files and Hub datasets in the `objects` layout and checks them; `augment` moves boxes
with the image; `batches` feeds the detector's own image processor; `model` builds and sizes the detector;
`metrics` computes the COCO box metrics; `scoring` makes detections exactly as `pipeline("object-detection")` does
and scores them; `report` draws them; `export` checks an exported detector by its detections.
"""
