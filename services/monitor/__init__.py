"""Monitor: drift of live predictions against the training snapshot's reference profile."""
