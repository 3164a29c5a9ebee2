"""request-size-limiting: refuse request bodies larger than a set size."""
