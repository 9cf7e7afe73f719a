"""The embedding cache: content keys, datasets, the statistics pass, inference copies."""
