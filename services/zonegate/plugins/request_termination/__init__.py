"""request-termination: answer every matching request with a fixed status and body."""
