"""Device mesh, logical-axis sharding, sharded initialisation and per-device reports."""
