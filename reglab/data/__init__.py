"""Datasets, the device-resident loader and batch augmentations."""
from .datasets import DataSplits, Split, load_splits, stratified_split, channel_stats
from .loader import DeviceLoader

__all__ = ["DataSplits", "Split", "load_splits", "stratified_split", "channel_stats", "DeviceLoader"]
