"""The web console: the admin pages, the chat page, the browser phone and the desk agent's page
(static files served by the API)."""
