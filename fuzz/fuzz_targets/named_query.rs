//! A named query's declaration as an operator writes it (name, SQL with `:param` placeholders,
//! parameters and their types, roles, scope parameter), checked by `Query::new` before anything
//! reaches a database: it may refuse, never panic; an accepted query numbers its placeholders
//! the same way every time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_core::dataservices::{Origin, ParamSpec, Query, QuerySpec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Fields separated by NUL: name, SQL, then (param name, type) pairs; '!' before a name marks
    // it required, '@' the scope parameter, and a field "roles=a,b" the roles.
    let mut fields = text.split('\0');
    let name = fields.next().unwrap_or_default().to_owned();
    let sql = fields.next().unwrap_or_default().to_owned();
    let mut params = Vec::new();
    let mut roles = vec!["admin".to_owned()];
    let mut scope = None;
    let rest: Vec<&str> = fields.collect();
    for pair in rest.chunks(2) {
        if let Some(r) = pair[0].strip_prefix("roles=") {
            roles = r.split(',').map(str::to_owned).collect();
            continue;
        }
        let raw = pair[0];
        let (required, raw) = raw.strip_prefix('!').map_or((false, raw), |r| (true, r));
        let (scoped, raw) = raw.strip_prefix('@').map_or((false, raw), |r| (true, r));
        if scoped {
            scope = Some(raw.to_owned());
        }
        params.push(ParamSpec {
            name: raw.to_owned(),
            ty: pair.get(1).copied().unwrap_or("string").to_owned(),
            required: Some(required),
            default: None,
        });
    }
    let spec = QuerySpec {
        name,
        description: "fuzzed".into(),
        sql,
        params,
        roles,
        scope_param: scope,
        timeout: None,
        origin: Origin {
            file: "fuzz".into(),
            line: 1,
        },
    };
    if let Ok(q) = Query::new(spec) {
        let a = q.numbered(|n, _| format!("${n}"));
        let b = q.numbered(|n, _| format!("${n}"));
        assert_eq!(a, b, "numbering is deterministic");
        let _ = q.placeholder_params().count();
    }
});
