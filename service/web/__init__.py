"""The web app: pages and static assets served by the API process; the pages call the public /v1 API."""
