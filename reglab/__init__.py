"""reglab: train, regularize, tune and study ResNets on CIFAR-10/100."""
__version__ = "0.1.0"
