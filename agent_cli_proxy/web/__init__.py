"""HTTP surface only: the routing table, auth, proxy and admin handlers, JSON errors."""
