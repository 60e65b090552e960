"""Human-readable daily log files: the format (and its parser) and the writer."""
