"""basic-auth: authenticate with a user name and password (``Authorization: Basic``)."""
