//! Query strings as the API reads them: the report endpoints' parameter structs (read as strings
//! by axum's `Query`, then each validated by its handler) and a named query's parameters bound by
//! their declared types (`Query::bind`: ids, text, integers, dates, instants, booleans). Nothing
//! may panic; a bound value must be of its parameter's type.
#![no_main]

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::Uri;
use libfuzzer_sys::fuzz_target;
use tally_core::dataservices::{Origin, ParamSpec, Query as Named, QuerySpec};

fn named() -> Named {
    let param = |name: &str, ty: &str, required: bool| ParamSpec {
        name: name.into(),
        ty: ty.into(),
        required: Some(required),
        default: None,
    };
    Named::new(QuerySpec {
        name: "fuzzed".into(),
        description: "every parameter type".into(),
        sql: "SELECT :store_id, :note, :top, :day, :at, :flag".into(),
        params: vec![
            param("store_id", "id", true),
            param("note", "string", false),
            param("top", "integer", false),
            param("day", "date", false),
            param("at", "timestamp", false),
            param("flag", "boolean", false),
        ],
        roles: vec!["admin".into()],
        scope_param: Some("store_id".into()),
        timeout: None,
        origin: Origin {
            file: "fuzz".into(),
            line: 1,
        },
    })
    .expect("the fuzzed query is valid")
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(uri) = format!("/v1/x?{query}").parse::<Uri>() {
        let _ = Query::<tally_http::queries::ItemParams>::try_from_uri(&uri);
        let _ = Query::<tally_http::queries::TopParams>::try_from_uri(&uri);
        let _ = Query::<tally_http::queries::CatalogParams>::try_from_uri(&uri);
    }
    let given: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let q = named();
    let _ = q.bind(&given, None);
    let _ = q.bind(&given, Some("s-1"));
});
