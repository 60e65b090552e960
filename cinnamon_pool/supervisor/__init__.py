"""The supervisor daemon: pure planning (reconcile) and the loop that applies it."""
