"""The HTTP surface: one ASGI application (admin, account pages, API, ACME http-01, MTA-STS,
client autoconfig, metrics) served by uvicorn's HTTP/1.1 protocol in the mail event loop."""
