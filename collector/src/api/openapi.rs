//! The OpenAPI 3.1 description of `/api/v1`, kept in the repository as
//! `collector/openapi.json` and served as it is.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as committed.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::server::ROUTES;
    use std::collections::BTreeSet;

    fn documented() -> (serde_json::Value, BTreeSet<(String, String)>) {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("openapi.json parses");
        let mut pairs = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                pairs.insert((method.to_uppercase(), path.clone()));
            }
        }
        (doc, pairs)
    }

    /// The document describes exactly the routes served: those of [`ROUTES`] (the router is
    /// built from that table).
    #[test]
    fn the_document_describes_every_route_and_no_other() {
        let (doc, pairs) = documented();
        assert_eq!(doc["openapi"], "3.1.0");
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        let missing: Vec<_> = routed.difference(&pairs).collect();
        let extra: Vec<_> = pairs.difference(&routed).collect();
        assert!(missing.is_empty(), "routed but not documented: {missing:?}");
        assert!(extra.is_empty(), "documented but not routed: {extra:?}");
    }

    /// Each operation declares its path parameters, its answers, and the error shape.
    #[test]
    fn every_operation_declares_its_parameters_and_answers() {
        let (doc, pairs) = documented();
        for (method, path) in pairs {
            let op = &doc["paths"][&path][method.to_lowercase()];
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            let in_path: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            assert_eq!(declared, in_path, "{method} {path}");
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{method} {path}: no success answer"
            );
            if path != "/api/v1/openapi.json" {
                assert!(responses.contains_key("401"), "{method} {path}: no 401");
            }
        }
        assert!(doc["components"]["schemas"]["Error"]["properties"]["code"].is_object());
    }
}
