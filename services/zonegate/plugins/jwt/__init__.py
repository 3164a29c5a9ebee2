"""jwt: authenticate with a signed JSON Web Token (HS, RS, ES, PS and EdDSA algorithms)."""
