"""LocalStack Lambda runtime executor running each function's `bootstrap` as a host process."""
