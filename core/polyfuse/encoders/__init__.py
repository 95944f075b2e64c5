"""The core's small encoders: vectors, discrete values and small images or symbolic grids."""
