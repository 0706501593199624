"""clusterprep: prepare a multi-node GPU cluster for distributed training, and prove it is ready."""

__version__ = "0.1.0"
