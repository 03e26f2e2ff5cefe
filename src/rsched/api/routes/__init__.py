"""One router per resource; ``ROUTERS`` is the order the app includes them in."""
