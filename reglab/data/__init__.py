"""Datasets, the device-resident loader and batch augmentations."""

from .datasets import DataSplits, Split, channel_stats, load_splits, stratified_split
from .loader import DeviceLoader

__all__ = ["DataSplits", "Split", "load_splits", "stratified_split", "channel_stats", "DeviceLoader"]
