"""voxgate: governed, self-hosted real-time voice agents."""

__version__ = "0.1.0"
