"""The routing engine's internals: lanes and attempts, the injected clock, backoff, deadlines,
progress and webhook wake-ups. Nothing here is public API; the public names are re-exported by
:mod:`genrouter` and :mod:`genrouter.testing`."""
