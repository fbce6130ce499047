//! Data services: read-only SQL queries an operator declares in configuration, each served as an
//! endpoint with typed parameters, roles and a scope, over the stable read-model views (`VIEWS`).
//!
//! This module holds what does not depend on a database: a query's declaration, the checks of its
//! shape (name, parameters, placeholders), the binding of a request's parameters to typed values,
//! and the [`DataServices`] port each backend implements. The safety that matters is the backend's:
//! its connections cannot write and can read the views only, whatever the SQL says.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::model::Role;
use crate::ports::Result;

pub mod catalog;
pub mod placeholders;
mod values;
pub use placeholders::Piece;
pub use values::{Bind, Cell, Column, Table, view_instant};

/// The views a query may read, with the same names and columns on every backend (documented in
/// `docs/views.md`). They may gain columns; they never lose or change one.
pub const VIEWS: [&str; 11] = [
    "suppliers",
    "stores",
    "items",
    "inventory",
    "store_daily_sales",
    "supplier_daily",
    "item_daily_sales",
    "supplier_item_daily",
    "item_daily_totals",
    "till_daily_sales",
    "events",
];

/// The longest a query runs unless its declaration says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows a call answers unless it asks for fewer (`limit`), and the most it may ask for.
pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;

/// A parameter's type, as declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// A business id (`[A-Za-z0-9_-]`, 1–64 characters): text.
    Id,
    String,
    Integer,
    /// `YYYY-MM-DD`, bound as that text (the views' dates are text).
    Date,
    /// An RFC 3339 instant, bound as UTC text `YYYY-MM-DDTHH:MM:SS.fffZ` (the views' form).
    Timestamp,
    Boolean,
}

impl ParamType {
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "id" => Self::Id,
            "string" => Self::String,
            "integer" => Self::Integer,
            "date" => Self::Date,
            "timestamp" => Self::Timestamp,
            "boolean" => Self::Boolean,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::String => "string",
            Self::Integer => "integer",
            Self::Date => "date",
            Self::Timestamp => "timestamp",
            Self::Boolean => "boolean",
        }
    }
}

/// Where a declaration was read from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A parameter as declared (the raw default is checked against the type by [`Query::new`]).
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: String,
    pub ty: String,
    pub required: Option<bool>,
    pub default: Option<String>,
}

/// A query as declared, before any check.
#[derive(Debug, Clone)]
pub struct QuerySpec {
    pub name: String,
    pub description: String,
    pub sql: String,
    pub params: Vec<ParamSpec>,
    pub roles: Vec<String>,
    pub scope_param: Option<String>,
    pub timeout: Option<Duration>,
    pub origin: Origin,
}

/// A checked parameter.
#[derive(Debug, Clone, Serialize)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ParamType,
    pub required: bool,
    /// The default as written in the declaration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(skip)]
    pub default_value: Option<Bind>,
}

/// A checked query, ready to be prepared by a backend.
#[derive(Debug, Clone)]
pub struct Query {
    pub name: String,
    pub description: String,
    pub sql: String,
    pub params: Vec<Param>,
    pub roles: Vec<Role>,
    pub scope_param: Option<String>,
    pub timeout: Duration,
    pub origin: Origin,
    pieces: Vec<Piece>,
    /// Parameter indexes in placeholder order.
    order: Vec<usize>,
    /// The result's columns, as the backend described them when the set was checked.
    pub columns: Vec<Column>,
}

/// What is wrong with a declaration, naming the query and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query {name} ({origin}): {problem}")]
pub struct Refusal {
    pub name: String,
    pub origin: Origin,
    pub problem: String,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The first word of the statement, past comments and whitespace, lowercased.
fn first_word(pieces: &[Piece]) -> String {
    let text: String = pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => t.as_str(),
            Piece::Placeholder(_) => " ? ",
        })
        .collect();
    let mut rest = text.as_str();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix('(') {
            rest = after;
        } else {
            break;
        }
    }
    rest.chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase()
}

impl Query {
    /// Checks a declaration's shape: its name, roles, parameters and their types and defaults, the
    /// scope parameter, that it starts as a read (`SELECT`, `WITH`, `VALUES`), and that its
    /// placeholders and its parameters match one to one. Whether the SQL prepares against the views
    /// and writes nothing is the backend's check ([`QuerySet::check`]).
    pub fn new(spec: QuerySpec) -> Result<Self, Refusal> {
        let refuse = |problem: String| Refusal {
            name: spec.name.clone(),
            origin: spec.origin.clone(),
            problem,
        };
        if !valid_name(&spec.name) {
            return Err(refuse(
                "the name must match [a-z][a-z0-9_]{0,63}".to_owned(),
            ));
        }
        if spec.roles.is_empty() {
            return Err(refuse("roles: at least one role may call it".to_owned()));
        }
        let roles = spec
            .roles
            .iter()
            .map(|r| Role::parse(r).ok_or_else(|| refuse(format!("roles: unknown role {r:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut params: Vec<Param> = Vec::new();
        for p in &spec.params {
            if !valid_name(&p.name) {
                return Err(refuse(format!(
                    "parameter {:?}: the name must match [a-z][a-z0-9_]{{0,63}}",
                    p.name
                )));
            }
            if ["limit", "min_position"].contains(&p.name.as_str()) {
                return Err(refuse(format!(
                    "parameter {}: the name is the endpoint's own",
                    p.name
                )));
            }
            if params.iter().any(|q| q.name == p.name) {
                return Err(refuse(format!("parameter {} is declared twice", p.name)));
            }
            let ty = ParamType::parse(&p.ty).ok_or_else(|| {
                refuse(format!(
                    "parameter {}: unknown type {:?} (id, string, integer, date, timestamp, boolean)",
                    p.name, p.ty
                ))
            })?;
            let default_value = match &p.default {
                Some(raw) => Some(Bind::parse(ty, raw).map_err(|e| {
                    refuse(format!("parameter {}: the default {raw:?} {e}", p.name))
                })?),
                None => None,
            };
            let required = p.required.unwrap_or(p.default.is_none());
            if required && p.default.is_some() {
                return Err(refuse(format!(
                    "parameter {}: a required parameter has no default",
                    p.name
                )));
            }
            params.push(Param {
                name: p.name.clone(),
                ty,
                required,
                default: p.default.clone(),
                default_value,
            });
        }
        if let Some(scope) = &spec.scope_param {
            match params.iter().find(|p| &p.name == scope) {
                Some(p) if p.ty == ParamType::Id => {}
                Some(_) => {
                    return Err(refuse(format!(
                        "scope_param {scope}: the parameter must be of type id"
                    )));
                }
                None => {
                    return Err(refuse(format!(
                        "scope_param {scope}: no parameter of that name"
                    )));
                }
            }
        }
        let pieces = placeholders::split(&spec.sql);
        let word = first_word(&pieces);
        if !["select", "with", "values"].contains(&word.as_str()) {
            return Err(refuse(format!(
                "not a SELECT: the statement starts with {:?}",
                if word.is_empty() { "nothing" } else { &word }
            )));
        }
        let names = placeholders::names(&pieces);
        let mut order = Vec::with_capacity(names.len());
        for n in &names {
            match params.iter().position(|p| &p.name == n) {
                Some(i) => order.push(i),
                None => {
                    return Err(refuse(format!(
                        "placeholder :{n} has no parameter (declare it under [[queries.params]])"
                    )));
                }
            }
        }
        if let Some(unused) = params.iter().find(|p| !names.contains(&p.name)) {
            return Err(refuse(format!(
                "parameter {} has no placeholder :{} in the SQL",
                unused.name, unused.name
            )));
        }
        Ok(Self {
            name: spec.name,
            description: spec.description,
            sql: spec.sql,
            params,
            roles,
            scope_param: spec.scope_param,
            timeout: spec.timeout.unwrap_or(DEFAULT_TIMEOUT),
            origin: spec.origin,
            pieces,
            order,
            columns: Vec::new(),
        })
    }

    /// A query of `sql` exactly as given, without the shape checks of [`Query::new`], so that the
    /// conformance suite can show what the database itself refuses.
    #[cfg(feature = "test-util")]
    pub fn unchecked(sql: &str) -> Self {
        Self {
            name: "unchecked".to_owned(),
            description: String::new(),
            sql: sql.to_owned(),
            params: Vec::new(),
            roles: vec![Role::Admin],
            scope_param: None,
            timeout: DEFAULT_TIMEOUT,
            origin: Origin {
                file: "test".to_owned(),
                line: 1,
            },
            pieces: placeholders::split(sql),
            order: Vec::new(),
            columns: Vec::new(),
        }
    }

    /// The parameters in the order of the statement's numbered placeholders.
    pub fn placeholder_params(&self) -> impl Iterator<Item = &Param> {
        self.order.iter().filter_map(|i| self.params.get(*i))
    }

    /// The statement with numbered placeholders, `number(n, param)` writing the `n`th (1-based).
    pub fn numbered(&self, mut number: impl FnMut(usize, &Param) -> String) -> String {
        placeholders::rewrite(&self.pieces, |n, name| {
            let p = self.params.iter().find(|p| p.name == name);
            p.map_or_else(String::new, |p| number(n, p))
        })
    }

    /// Whether a key of `role` may call it.
    pub fn allows(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The values to bind, in placeholder order, from a request's parameters: each declared one
    /// parsed by its type (or its default), a missing required one, an ill-typed one and an
    /// undeclared one refused naming it. `scope` pins the scope parameter to a key's own id.
    pub fn bind(
        &self,
        given: &HashMap<String, String>,
        scope: Option<&str>,
    ) -> Result<Vec<Bind>, BindError> {
        if let Some(unknown) = given
            .keys()
            .find(|k| !self.params.iter().any(|p| &p.name == *k))
        {
            return Err(BindError::Unknown(unknown.clone()));
        }
        let mut values = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let value = match given.get(&p.name) {
                Some(raw) => Bind::parse(p.ty, raw).map_err(|e| BindError::Invalid {
                    param: p.name.clone(),
                    problem: e.to_owned(),
                })?,
                None => match (&p.default_value, p.required) {
                    (Some(d), _) => d.clone(),
                    (None, true) => return Err(BindError::Missing(p.name.clone())),
                    (None, false) => Bind::Null,
                },
            };
            if let (Some(own), Some(param)) = (scope, &self.scope_param)
                && param == &p.name
                && value != Bind::Text(own.to_owned())
            {
                return Err(BindError::OutOfScope(p.name.clone()));
            }
            values.push(value);
        }
        Ok(self.order.iter().map(|i| values[*i].clone()).collect())
    }
}

/// Why a request's parameters do not bind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("{0}: no such parameter")]
    Unknown(String),
    #[error("{0}: required")]
    Missing(String),
    #[error("{param}: {problem}")]
    Invalid { param: String, problem: String },
    /// A scoped key asked for another store's or supplier's rows.
    #[error("{0}: a scoped key may only ask for its own id")]
    OutOfScope(String),
}

/// The declared queries, checked together: names unique, each prepared by the backend.
#[derive(Debug, Clone, Default)]
pub struct QuerySet {
    queries: Vec<Arc<Query>>,
}

impl QuerySet {
    /// Checks every declaration's shape, then prepares each against the backend's views (unknown
    /// tables and columns, writes and other statements refused there), recording its columns.
    /// Every refusal is returned, not only the first.
    pub async fn check(
        specs: Vec<QuerySpec>,
        backend: &dyn DataServices,
    ) -> Result<Self, Vec<Refusal>> {
        let mut refusals = Vec::new();
        let mut queries: Vec<Arc<Query>> = Vec::new();
        for spec in specs {
            if let Some(first) = queries.iter().find(|q| q.name == spec.name) {
                refusals.push(Refusal {
                    name: spec.name.clone(),
                    origin: spec.origin.clone(),
                    problem: format!("the name is declared twice (first at {})", first.origin),
                });
                continue;
            }
            let mut query = match Query::new(spec) {
                Ok(q) => q,
                Err(r) => {
                    refusals.push(r);
                    continue;
                }
            };
            match backend.describe(&query).await {
                Ok(columns) => {
                    query.columns = columns;
                    queries.push(Arc::new(query));
                }
                Err(problem) => refusals.push(Refusal {
                    name: query.name.clone(),
                    origin: query.origin.clone(),
                    problem,
                }),
            }
        }
        if refusals.is_empty() {
            Ok(Self { queries })
        } else {
            Err(refusals)
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Query>> {
        self.queries.iter().find(|q| q.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Query>> {
        self.queries.iter()
    }

    pub fn len(&self) -> usize {
        self.queries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The statement ran past its time limit and was cancelled.
    #[error("the query ran past its time limit of {0:?} and was cancelled")]
    Timeout(Duration),
    /// The database refused the statement at run time (a value it could not use, a division by
    /// zero): the caller's input or the query's, not the service's health.
    #[error("the database refused the query: {0}")]
    Refused(String),
    #[error(transparent)]
    Storage(#[from] crate::ports::Error),
}

/// What a backend provides for data services: connections that can read the views only.
#[async_trait]
pub trait DataServices: Send + Sync + 'static {
    /// Prepares the query against the views with connections that cannot write, and returns its
    /// columns; or the problem (not one statement, not read-only, a table or column that is not
    /// in the views, a placeholder the database cannot type), as the database says it.
    async fn describe(&self, query: &Query) -> Result<Vec<Column>, String>;

    /// Runs the query with `binds` (in placeholder order): at most `limit` rows (`truncated` when
    /// there were more), cancelled after the query's time limit.
    async fn run(&self, query: &Query, binds: Vec<Bind>, limit: usize) -> Result<Table, RunError>;
}

#[cfg(test)]
mod tests;
