"""Data sets, loaders and partitioning of samples and features among parties."""

from splitlearn.data.cifar import load_cifar10, load_cifar100
from splitlearn.data.dataset import ArrayDataset, DataError
from splitlearn.data.embedded import load_breast_cancer, load_digits
from splitlearn.data.idx import load_fashion_mnist
from splitlearn.data.imagefolder import load_histology, load_image_folder
from splitlearn.data.partition import (
    dirichlet_partition,
    feature_slices,
    iid_partition,
    stratified_split,
    vertical_split,
)
from splitlearn.data.registry import DATASETS, load_dataset
from splitlearn.data.table import SiteTable, VerticalTables, load_csv, load_site_csv, load_vertical_csv

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DataError",
    "SiteTable",
    "VerticalTables",
    "dirichlet_partition",
    "feature_slices",
    "iid_partition",
    "load_breast_cancer",
    "load_cifar10",
    "load_cifar100",
    "load_csv",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_histology",
    "load_image_folder",
    "load_site_csv",
    "load_vertical_csv",
    "stratified_split",
    "vertical_split",
]
