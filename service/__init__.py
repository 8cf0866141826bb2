"""lmroute runtime: routers, policy, and (later) the gRPC service, gateway and SDK."""

__version__ = "0.1.0"
