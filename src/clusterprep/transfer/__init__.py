"""Moving file trees to every node: manifests, broadcast, verification (Hugging Face weights)."""
