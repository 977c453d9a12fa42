"""Where weights come from: weight cards and verified fetching. Never builds models."""
