"""Timing detect's R50-FPN Faster R-CNN beside torchvision's and Detectron2's on the same weights.

``weights``: one set of random weights with realistic activations, in each peer's naming.
``peers``: the three models behind one interface, doing the same work.
``worker``: the measurements of one peer in one mode, run in a fresh process.
``suite``: the whole run (weights, workers, agreement check); ``report``: its tables.
"""
