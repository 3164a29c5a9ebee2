"""acl: allow or deny consumers by the groups they belong to."""
