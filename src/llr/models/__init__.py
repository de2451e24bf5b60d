"""Backbones with one interface (``embed`` and a linear ``head``): torchvision ResNets and BERT."""
