"""Pure knowledge of API families: request rules, usage extraction per wire format.

No sockets and no SQL here: every function takes bytes or parsed JSON and returns data.
"""
