"""A sweep's or study's table (``task=compare``): its jobs found and read, grouped into models,
tabled, correlated and drawn."""
