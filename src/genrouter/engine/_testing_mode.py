"""Process-wide test switch: when ``enabled``, the router never sleeps between attempts.

Set through :func:`genrouter.testing.set_testing`. Read once per retry decision.
"""

from __future__ import annotations

enabled = False
