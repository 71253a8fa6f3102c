"""wsswarm: WebSocket load generator, server sampler and report of echolab."""

__version__ = "0.1.0"
