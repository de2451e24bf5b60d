"""Process plumbing: the fork server that starts jobs warm and per-job GPU slots."""
