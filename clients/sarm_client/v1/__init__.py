"""Generated from proto/sarm/v1/sarm.proto by `make proto`."""
