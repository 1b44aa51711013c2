"""Pure protocol code: no I/O, no asyncio, no database.

Bytes and values go in, immutable results come out. Everything that talks to a socket
or a database lives in ``store``, ``collector`` or ``query`` and calls into here.
"""
