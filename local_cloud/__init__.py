"""A local stand-in for the Google Cloud services the chain uses, speaking their real formats."""
