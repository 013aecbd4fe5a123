"""Offline CPU stages: indexing, synthetic city, depth inference, regions, shards."""
