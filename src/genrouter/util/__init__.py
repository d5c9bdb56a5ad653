"""Small internal utilities shared by every layer: secret scrubbing, media inputs, PNG
encoding, and the httpx import shim. Nothing here is public API."""
