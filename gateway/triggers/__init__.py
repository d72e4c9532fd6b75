"""Trigger bindings (function + type + config) and the trigger types that fire them."""
