"""Routing: pure planning and scoring, health and circuit state, state stores."""
