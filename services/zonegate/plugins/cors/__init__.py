"""cors: answer CORS preflights and add the CORS headers to responses."""
