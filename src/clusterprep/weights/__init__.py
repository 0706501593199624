"""`clusterprep weights`: Hugging Face weights staged once, synced to every node, verified."""
