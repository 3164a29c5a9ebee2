"""response-transformer: rewrite the response's headers and JSON body before the client gets them."""
