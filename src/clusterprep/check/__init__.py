"""`clusterprep check`: install checks on every node, fingerprints, and the drift between them."""
