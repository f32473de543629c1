"""Training: the loop, batches, resume, several processes."""
