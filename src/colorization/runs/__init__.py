"""Running a command: the one entry (resolvers, one-line errors), the trainer and its loggers, sweeps."""
