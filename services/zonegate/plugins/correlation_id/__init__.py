"""correlation-id: give every request an id header, upstream and (optionally) back to the client."""
