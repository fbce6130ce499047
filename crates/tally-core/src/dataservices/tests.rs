use super::*;

fn spec(sql: &str, params: &[(&str, &str, Option<&str>)]) -> QuerySpec {
    QuerySpec {
        name: "q".to_owned(),
        description: String::new(),
        sql: sql.to_owned(),
        params: params
            .iter()
            .map(|(n, t, d)| ParamSpec {
                name: (*n).to_owned(),
                ty: (*t).to_owned(),
                required: None,
                default: d.map(str::to_owned),
            })
            .collect(),
        roles: vec!["admin".to_owned(), "store".to_owned()],
        scope_param: None,
        timeout: None,
        origin: Origin {
            file: "tally.toml".to_owned(),
            line: 7,
        },
    }
}

fn problem(s: QuerySpec) -> String {
    let e = Query::new(s).expect_err("refused");
    assert_eq!(e.origin.line, 7);
    e.problem
}

#[test]
fn the_shape_of_a_declaration_is_checked() {
    assert!(problem(spec("delete from inventory", &[])).contains("not a SELECT"));
    assert!(problem(spec("  -- hi\n pragma x", &[])).contains("\"pragma\""));
    assert!(
        problem(spec("select * from inventory where store_id = :store", &[]))
            .contains("placeholder :store has no parameter")
    );
    assert!(
        problem(spec("select 1", &[("store", "id", None)])).contains("has no placeholder :store")
    );
    assert!(problem(spec("select :a", &[("a", "float", None)])).contains("unknown type"));
    assert!(
        problem(spec("select :a", &[("a", "date", Some("yesterday"))])).contains("must be a date")
    );
    let mut bad = spec("select 1", &[]);
    bad.name = "Bad-Name".to_owned();
    assert!(problem(bad).contains("[a-z]"));
    let mut role = spec("select 1", &[]);
    role.roles = vec!["owner".to_owned()];
    assert!(problem(role).contains("unknown role"));
    let mut scope = spec("select :n", &[("n", "integer", None)]);
    scope.scope_param = Some("n".to_owned());
    assert!(problem(scope).contains("type id"));
    assert!(Query::new(spec("(select 1) union (select 2)", &[])).is_ok());
    assert!(Query::new(spec("WITH x AS (select 1) select * from x", &[])).is_ok());
}

#[test]
fn requests_bind_typed_values_in_placeholder_order() {
    let q = Query::new(spec(
        "select * from store_daily_sales where date <= :to and store_id = :store and date >= :from and :to <> ''",
        &[
            ("store", "id", None),
            ("from", "date", Some("2026-01-01")),
            ("to", "date", None),
        ],
    ))
    .expect("valid");
    let given = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        q.bind(&given(&[("store", "S1"), ("to", "2026-02-01")]), None),
        Ok(vec![
            Bind::Text("2026-02-01".into()),
            Bind::Text("S1".into()),
            Bind::Text("2026-01-01".into()),
        ])
    );
    assert_eq!(
        q.numbered(|n, p| format!("${n}:{}", p.ty.as_str())),
        "select * from store_daily_sales where date <= $1:date and store_id = $2:id and date >= $3:date and $1:date <> ''"
    );
    assert_eq!(
        q.bind(&given(&[("store", "S1")]), None),
        Err(BindError::Missing("to".into()))
    );
    assert_eq!(
        q.bind(
            &given(&[("store", "' OR 1=1 --"), ("to", "2026-02-01")]),
            None
        ),
        Err(BindError::Invalid {
            param: "store".into(),
            problem:
                "must be an id: 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or a digit"
                    .into()
        })
    );
    assert_eq!(
        q.bind(&given(&[("store", "S1"), ("to", "2026-2-1")]), None),
        Err(BindError::Invalid {
            param: "to".into(),
            problem: "must be a date, YYYY-MM-DD".into()
        })
    );
    assert_eq!(
        q.bind(
            &given(&[("store", "S1"), ("to", "2026-02-01"), ("x", "1")]),
            None
        ),
        Err(BindError::Unknown("x".into()))
    );
}

#[test]
fn a_scoped_key_is_pinned_to_its_own_id() {
    let mut s = spec(
        "select * from inventory where store_id = :store_id",
        &[("store_id", "id", None)],
    );
    s.scope_param = Some("store_id".to_owned());
    let q = Query::new(s).expect("valid");
    let mine: HashMap<String, String> = [("store_id".to_owned(), "S1".to_owned())].into();
    assert_eq!(q.bind(&mine, Some("S1")), Ok(vec![Bind::Text("S1".into())]));
    assert_eq!(
        q.bind(&mine, Some("S2")),
        Err(BindError::OutOfScope("store_id".into()))
    );
}

#[test]
fn values_parse_by_type() {
    assert_eq!(
        Bind::parse(ParamType::Timestamp, "2026-12-01T10:30:00+01:00"),
        Ok(Bind::Text("2026-12-01T09:30:00.000000Z".into()))
    );
    assert!(Bind::parse(ParamType::Timestamp, "2026-12-01 10:30").is_err());
    assert_eq!(
        Bind::parse(ParamType::Integer, "-12"),
        Ok(Bind::Integer(-12))
    );
    assert!(Bind::parse(ParamType::Integer, "1; drop table events").is_err());
    assert_eq!(
        Bind::parse(ParamType::Boolean, "true"),
        Ok(Bind::Boolean(true))
    );
    assert!(Bind::parse(ParamType::String, "a\0b").is_err());
    assert!(Bind::parse(ParamType::String, &"x".repeat(100 * 1024)).is_err());
    assert_eq!(
        Bind::parse(ParamType::String, "' OR 1=1 --"),
        Ok(Bind::Text("' OR 1=1 --".into()))
    );
}
