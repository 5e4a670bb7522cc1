//! The route templates of openapi.json for poem's patterns.
//!
//! poem-openapi routes operations under patterns whose path parameters are named by position
//! (`/v1/conversations/:param0/messages`); users know the names in openapi.json
//! (`/v1/conversations/{id}/messages`). This maps one to the other, from the spec itself, for
//! logs, metrics, span names and the `field` of a path parameter's validation error.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct RouteTemplates {
    /// Path shape (parameters as `*`) → openapi.json template.
    by_shape: HashMap<String, String>,
}

impl RouteTemplates {
    /// From the `paths` of an OpenAPI document (JSON).
    pub fn from_spec(spec: &str) -> Self {
        let spec: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let by_shape = spec["paths"]
            .as_object()
            .map(|paths| paths.keys().map(|path| (shape(path), path.clone())).collect())
            .unwrap_or_default();
        Self { by_shape }
    }

    /// The openapi.json template of a poem pattern; for a route outside the spec, the pattern
    /// with its parameters in braces.
    pub fn template(&self, pattern: &str) -> String {
        self.by_shape.get(&shape(pattern)).cloned().unwrap_or_else(|| braced(pattern))
    }

    /// The openapi.json name of a parameter of `pattern` that poem-openapi calls `positional`.
    pub fn parameter_name(&self, pattern: &str, positional: &str) -> Option<String> {
        let position = pattern.split('/').filter(|segment| is_parameter(segment)).position(|segment| {
            segment.trim_start_matches(':').trim_start_matches('{').trim_end_matches('}') == positional
        })?;
        let template = self.by_shape.get(&shape(pattern))?;
        let name = template.split('/').filter(|segment| is_parameter(segment)).nth(position)?;
        Some(name.trim_start_matches('{').trim_end_matches('}').to_owned())
    }
}

fn is_parameter(segment: &str) -> bool {
    segment.starts_with(':') || segment.starts_with('{')
}

fn shape(path: &str) -> String {
    path.split('/').map(|segment| if is_parameter(segment) { "*" } else { segment }).collect::<Vec<_>>().join("/")
}

fn braced(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|segment| match segment.strip_prefix(':') {
            Some(name) => format!("{{{name}}}"),
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> RouteTemplates {
        RouteTemplates::from_spec(
            r#"{"paths": {"/v1/conversations/{id}/messages/{message_id}": {}, "/v1/conversations": {}}}"#,
        )
    }

    #[test]
    fn patterns_get_the_specs_parameter_names() {
        let templates = templates();
        let pattern = "/v1/conversations/:param0/messages/:param1";
        assert_eq!(templates.template(pattern), "/v1/conversations/{id}/messages/{message_id}");
        assert_eq!(templates.parameter_name(pattern, "param1").as_deref(), Some("message_id"));
        assert_eq!(templates.parameter_name(pattern, "param0").as_deref(), Some("id"));
        assert_eq!(templates.template("/v1/conversations"), "/v1/conversations");
        assert_eq!(templates.template("/docs/:file"), "/docs/{file}", "outside the spec");
        assert_eq!(templates.parameter_name("/docs/:file", "file"), None);
    }
}
