//! The CMP routes in the OpenAPI document.
