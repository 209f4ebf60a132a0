"""Rules that protect the people sopflow contacts, checked right before every touch."""
