"""Data for both roles: datasets as image tensors, the plan of who holds which samples, and augmented views."""

from fedtosc.data.datasets import DataSplits, DatasetError, ImageDataset, load_dataset
from fedtosc.data.partition import DataPlan, partition_indices, plan_data

__all__ = ["DataPlan", "DataSplits", "DatasetError", "ImageDataset", "load_dataset", "partition_indices", "plan_data"]
