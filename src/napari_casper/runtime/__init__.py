"""Where and how long work runs: device selection, mixed precision, cancellation."""
