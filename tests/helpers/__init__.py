"""What several tests share: paths and configs, real photo folders, recorders and killers for real runs, files
shaped like the authors', independent computations, hostile files, a headless browser."""
