"""The benchmark's machinery (``python -m colorization.bench``): its inputs, the 2016-style reference pipeline,
timers, the measurements and the report."""
