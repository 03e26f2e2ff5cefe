"""The worker: claims runs from the database queue and solves them in the sandbox."""
