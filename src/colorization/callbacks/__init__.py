from colorization.callbacks.image_grid import ColorizationGrid

__all__ = ["ColorizationGrid"]
