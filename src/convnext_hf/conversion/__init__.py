"""The checkpoint converter: official, timm, mmcls/mmsegmentation, PASSL and transformers layouts to Hub folders.

`convnext-hf convert --help` is its command line; `convert()` in `converter` is the same conversion as a function.
"""
