"""The networks and their checkpoints: CharRNN, its writing steps, devices."""
