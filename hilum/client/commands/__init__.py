"""Client command groups, one module per resource."""
