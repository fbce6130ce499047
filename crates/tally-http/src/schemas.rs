//! `GET /v1/events/schemas`: every event type in every schema version the log may hold, each with
//! the JSON Schema of its payload (`data`), generated from the payload types
//! ([`tally_domain::schema`]). Events are served in their type's current version (older ones are
//! upcast), so a consumer of `/v1/events` needs the `current` ones; the older ones describe what
//! the log stores.

use axum::Json;
use serde::Serialize;
use tally_core::model::Role;
use utoipa::ToSchema;

use crate::auth::Auth;
use crate::error::ApiError;

#[derive(Debug, Serialize, ToSchema)]
pub struct EventSchemaBody {
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    /// Whether this build writes (and serves) this version.
    pub current: bool,
    /// A JSON Schema (draft 2020-12) of the payload, its parts under `$defs`.
    #[schema(value_type = Object)]
    pub schema: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventSchemas {
    pub schemas: Vec<EventSchemaBody>,
}

#[utoipa::path(get, path = "/v1/events/schemas", tag = "events", security(("api_key" = [])),
    responses((status = 200, body = EventSchemas), crate::queries::QueryErrors))]
pub async fn event_schemas(auth: Auth) -> Result<Json<EventSchemas>, ApiError> {
    auth.require(&[Role::Admin, Role::Auditor])?;
    Ok(Json(EventSchemas {
        schemas: tally_domain::schema::event_schemas()
            .into_iter()
            .map(|s| EventSchemaBody {
                event_type: s.event_type.to_owned(),
                schema_version: s.schema_version,
                current: s.current,
                schema: s.schema,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    //! Each stored fixture of the domain's corpus (`crates/tally-domain/tests/corpus`, one per
    //! type and version) validates against its version's schema: the schemas describe what is
    //! stored, not what someone thought was.

    use serde_json::Value;

    /// The subset of JSON Schema the generated documents use: `$ref` into `$defs`, `type`,
    /// `properties`, `required`, `items`, `enum`, `minimum`, `maximum`, `oneOf`, `pattern` (ids'
    /// grammar, checked by hand). Returns the paths that fail.
    fn check(doc: &Value, schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
        if let Some(r) = schema["$ref"].as_str() {
            let name = r.trim_start_matches("#/$defs/");
            return check(doc, &doc["$defs"][name], v, path, out);
        }
        if let Some(any) = schema["oneOf"].as_array() {
            let ok = any.iter().any(|s| {
                let mut errs = Vec::new();
                check(doc, s, v, path, &mut errs);
                errs.is_empty()
            });
            if !ok {
                out.push(format!("{path}: matches none of oneOf"));
            }
            return;
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let kind = match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let fits = types.is_empty()
            || types.contains(&kind)
            || (kind == "integer" && types.contains(&"number"));
        if !fits {
            out.push(format!("{path}: {kind}, the schema says {types:?}"));
            return;
        }
        if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), v.as_f64())
            && n < min
        {
            out.push(format!("{path}: {n} < minimum {min}"));
        }
        if let (Some(max), Some(n)) = (schema["maximum"].as_f64(), v.as_f64())
            && n > max
        {
            out.push(format!("{path}: {n} > maximum {max}"));
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(v)
        {
            out.push(format!("{path}: {v} is not one of {allowed:?}"));
        }
        if let Some(s) = v.as_str()
            && schema["pattern"].is_string()
            && tally_domain::values::StoreId::parse(s).is_err()
        {
            out.push(format!("{path}: {s:?} is not an id"));
        }
        if let (Some(props), Some(obj)) = (schema["properties"].as_object(), v.as_object()) {
            for key in schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !obj.contains_key(key) {
                    out.push(format!("{path}: {key} is required"));
                }
            }
            for (k, val) in obj {
                match props.get(k) {
                    Some(s) => check(doc, s, val, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}: not in the schema")),
                }
            }
        }
        if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
            for (i, x) in arr.iter().enumerate() {
                check(doc, items, x, &format!("{path}[{i}]"), out);
            }
        }
    }

    #[test]
    fn every_stored_fixture_matches_its_versions_schema() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tally-domain/tests/corpus");
        let schemas = tally_domain::schema::event_schemas();
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus") {
            let path = entry.expect("a corpus entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let fixture: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
            let (t, v) = (
                fixture["event_type"].as_str().expect("type"),
                fixture["schema_version"].as_u64().expect("version"),
            );
            let s = schemas
                .iter()
                .find(|s| s.event_type == t && u64::from(s.schema_version) == v)
                .unwrap_or_else(|| panic!("no schema for {t} v{v}"));
            let stored: Value = serde_json::from_str(fixture["stored"].as_str().expect("stored"))
                .expect("stored JSON");
            let mut errs = Vec::new();
            check(&s.schema, &s.schema, &stored, "data", &mut errs);
            assert!(
                errs.is_empty(),
                "{}: {errs:?}\nschema: {}",
                path.display(),
                s.schema
            );
            seen += 1;
        }
        assert!(
            seen >= schemas.len(),
            "{seen} fixtures for {} schemas",
            schemas.len()
        );
        // And a payload that breaks the rules fails, so the check can fail.
        let sale = schemas
            .iter()
            .find(|s| s.event_type == "SaleRecorded" && s.current)
            .expect("SaleRecorded");
        let bad = serde_json::json!({"sale_id": "s 1", "store_id": "a", "business_date": "2026-01-01",
            "lines": [{"item_id": "x", "supplier_id": "y", "quantity": 0, "unit_price_cents": 1, "discount_cents": 0}]});
        let mut errs = Vec::new();
        check(&sale.schema, &sale.schema, &bad, "data", &mut errs);
        assert_eq!(errs.len(), 2, "{errs:?}");
    }
}
