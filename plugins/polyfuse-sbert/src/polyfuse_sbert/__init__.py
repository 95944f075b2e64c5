"""sentence-transformers text encoders for polyfuse."""
