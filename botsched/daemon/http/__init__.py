"""The HTTP API (SPEC §9): the socket's other language, and an opt-in TCP listener.

``app`` builds the aiohttp application (handlers only translate to service calls),
``openapi`` its OpenAPI 3.1 document, ``listen`` the daemon's side of serving it (a Unix
connection handed over after sniffing, the TCP site, the bearer token), ``streams`` the
events/wait/bulk hooks over the store and the event hub.
"""
