"""The QA and integration kit: the Postman collection generated from the OpenAPI document."""
