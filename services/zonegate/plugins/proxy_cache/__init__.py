"""proxy-cache: answer repeated requests from responses held in this proxy process's memory."""
