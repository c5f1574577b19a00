from colorization.callbacks.ab_histogram import AbHistogram
from colorization.callbacks.final_validation import FinalValidation
from colorization.callbacks.git_state import GitState
from colorization.callbacks.image_grid import ColorizationGrid
from colorization.callbacks.temperature_strip import TemperatureStrip

__all__ = ["AbHistogram", "ColorizationGrid", "FinalValidation", "GitState", "TemperatureStrip"]
