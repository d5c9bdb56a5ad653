"""genrouter."""
