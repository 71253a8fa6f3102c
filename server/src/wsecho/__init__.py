"""wsecho: the WebSocket echo service of echolab."""

__version__ = "0.1.0"
