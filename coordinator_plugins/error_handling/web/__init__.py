"""The HTTP surface: routes, request validation, the OpenAPI document and the dashboard."""
