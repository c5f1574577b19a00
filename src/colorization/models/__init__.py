from colorization.models.eccv16 import ECCV16
from colorization.models.losses import ColorizationLoss
from colorization.models.module import ColorizationModule

__all__ = ["ECCV16", "ColorizationLoss", "ColorizationModule"]
