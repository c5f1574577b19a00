from colorization.callbacks.fault_tolerance import FaultTolerance, NonFiniteLossError
from colorization.callbacks.image_grid import ColorizationGrid
from colorization.callbacks.skipped_images import SkippedImages

__all__ = ["ColorizationGrid", "FaultTolerance", "NonFiniteLossError", "SkippedImages"]
