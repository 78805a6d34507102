"""Reading Xperience episodes (raw layout) and training windows (shards)."""
