"""Domain types: errors, configs, IOSpec, Model, Data, results, Artifact, recipes, metrics."""
