from colorization.callbacks.ab_histogram import AbHistogram
from colorization.callbacks.fault_tolerance import FaultTolerance, LastCheckpoint, NonFiniteLossError
from colorization.callbacks.final_validation import FinalValidation
from colorization.callbacks.git_state import GitState
from colorization.callbacks.image_grid import ColorizationGrid
from colorization.callbacks.progress_bar import StepsProgressBar
from colorization.callbacks.random_states import RandomStates
from colorization.callbacks.skipped_images import SkippedImages
from colorization.callbacks.temperature_strip import TemperatureStrip

__all__ = [
    "AbHistogram",
    "ColorizationGrid",
    "FaultTolerance",
    "FinalValidation",
    "GitState",
    "LastCheckpoint",
    "NonFiniteLossError",
    "RandomStates",
    "SkippedImages",
    "StepsProgressBar",
    "TemperatureStrip",
]
