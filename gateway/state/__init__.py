"""The state module: six functions, update ops, change events and state triggers."""
