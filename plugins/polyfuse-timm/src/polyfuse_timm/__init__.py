"""Image encoders from any timm model for polyfuse (registry name ``timm``)."""
