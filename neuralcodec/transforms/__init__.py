"""Wavelet packet transforms (1D/2D/3D) and companding."""
