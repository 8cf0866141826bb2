"""gRPC API of lmroute: the wire contract lives in proto/, the generated stubs in ``gen/``."""
