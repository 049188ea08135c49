"""The web console; for now a text chat page to try the served agents."""
