//! The OpenAPI 3.1 document of the server API, generated from the handlers'
//! annotations and the request and answer types: it changes with the code
//! and cannot drift from it. `GET /api/v1/openapi.json` serves it, and the
//! test suites check it with an OpenAPI validator.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::{handlers, request, response};

/// The document's root: every route, type and the bearer scheme.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ecos server API",
        description = "Lets a backend reach the Socket.IO clients connected to any ecos instance: \
            emit events, change room membership, disconnect sockets, list rooms and sockets. \
            Every call needs `Authorization: Bearer <key>` with a key from `api.keys`. \
            See docs/server-api.md."
    ),
    paths(
        handlers::emit,
        handlers::join,
        handlers::leave,
        handlers::disconnect,
        handlers::rooms,
        handlers::sockets,
        handlers::openapi,
    ),
    components(schemas(
        request::SelectorFields,
        request::EmitRequest,
        request::RoomRequest,
        request::DisconnectRequest,
        response::ClusterState,
        response::Done,
        response::RoomsListing,
        response::SocketsListing,
        response::ErrorBody,
    )),
    modifiers(&BearerKey),
    tags((name = "server API", description = "For backends, never for browsers: the keys are secrets."))
)]
pub struct ApiDoc;

/// Adds the `api_key` bearer scheme every route requires.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A key from `api.keys` (`ECOS_API__KEYS`)"))
                    .build(),
            ),
        );
    }
}

/// The document as JSON.
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|error| {
        format!(r#"{{"error":"cannot render the OpenAPI document: {error}"}}"#)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(&document()).expect("the document is JSON")
    }

    /// The property names of a schema, through `allOf` and `$ref`s.
    fn properties(doc: &Value, schema: &str) -> Vec<String> {
        fn collect(doc: &Value, schema: &Value, out: &mut Vec<String>) {
            if let Some(reference) = schema["$ref"].as_str() {
                let name = reference.rsplit('/').next().unwrap_or_default();
                return collect(doc, &doc["components"]["schemas"][name], out);
            }
            if let Some(parts) = schema["allOf"].as_array() {
                for part in parts {
                    collect(doc, part, out);
                }
            }
            if let Some(props) = schema["properties"].as_object() {
                out.extend(props.keys().cloned());
            }
        }
        let mut names = Vec::new();
        collect(doc, &doc["components"]["schemas"][schema], &mut names);
        names.sort();
        names
    }

    fn sorted(fields: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_document_lists_every_route_and_nothing_else() {
        let doc = doc();
        let mut paths: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        paths.sort();
        let mut routes = super::super::ROUTES.to_vec();
        routes.sort();
        assert_eq!(paths, routes);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    }

    #[test]
    fn each_parser_accepts_exactly_the_fields_its_schema_declares() {
        let doc = doc();
        assert_eq!(
            properties(&doc, "EmitRequest"),
            sorted(&request::EMIT_FIELDS)
        );
        assert_eq!(
            properties(&doc, "RoomRequest"),
            sorted(&request::ROOM_FIELDS)
        );
        assert_eq!(
            properties(&doc, "DisconnectRequest"),
            sorted(&request::DISCONNECT_FIELDS)
        );
        assert_eq!(
            properties(&doc, "SelectorFields"),
            sorted(&request::SELECTOR_FIELDS)
        );
        let params: Vec<&str> = doc["paths"]["/api/v1/sockets"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(params, request::SOCKETS_QUERY_FIELDS);
    }
}
