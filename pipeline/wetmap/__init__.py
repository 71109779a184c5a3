"""wetmap: wetland maps from satellite scenes, cloud-masked end to end."""

__version__ = "0.1.0"
