//! Named placeholders (`:name`) in an operator's SQL, found by a small lexer that knows SQL's string
//! literals, quoted identifiers, comments and PostgreSQL's `::` casts, and rewritten into each
//! backend's numbered form. Values are never spliced in: the rewritten text only ever gains
//! placeholder numbers (and, for PostgreSQL, a cast to the declared parameter type).

/// A piece of the statement: text as written, or a placeholder by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Placeholder(String),
}

/// Splits `sql` into text and placeholders. A `:` starts a placeholder when a letter or `_`
/// follows it and it is not part of `::`; inside quotes and comments nothing is a placeholder.
pub fn split(sql: &str) -> Vec<Piece> {
    let bytes = sql.as_bytes();
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let skip_to = match c {
            b'\'' | b'"' | b'`' => Some(quoted(bytes, i, c)),
            b'-' if bytes.get(i + 1) == Some(&b'-') => Some(
                bytes[i..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(bytes.len(), |n| i + n),
            ),
            b'/' if bytes.get(i + 1) == Some(&b'*') => Some(
                sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |n| i + 2 + n + 2),
            ),
            b':' if bytes.get(i + 1) == Some(&b':') => Some(i + 2),
            _ => None,
        };
        if let Some(end) = skip_to {
            text.push_str(&sql[i..end]);
            i = end;
            continue;
        }
        if c == b':'
            && bytes
                .get(i + 1)
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        {
            let start = i + 1;
            let end = bytes[start..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                .map_or(bytes.len(), |n| start + n);
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Placeholder(sql[start..end].to_owned()));
            i = end;
            continue;
        }
        // Whole characters: the text is UTF-8 and cut only at ASCII bytes above.
        let width = sql[i..].chars().next().map_or(1, char::len_utf8);
        text.push_str(&sql[i..i + width]);
        i += width;
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// The end (exclusive) of the quoted run starting at `start`; a doubled quote is an escaped one.
fn quoted(bytes: &[u8], start: usize, quote: u8) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// The identifiers the statement names outside string literals and comments (bare words and
/// quoted identifiers alike), lowercased: what a backend checks a statement's table names against.
pub fn identifiers(sql: &str) -> Vec<String> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\'' => i = quoted(bytes, i, c),
            b'"' | b'`' => {
                let end = quoted(bytes, i, c);
                let inner = &sql[i + 1..end.saturating_sub(1).max(i + 1)];
                out.push(
                    inner
                        .replace(if c == b'"' { "\"\"" } else { "``" }, "")
                        .to_ascii_lowercase(),
                );
                i = end;
            }
            b'[' => {
                let end = sql[i..].find(']').map_or(bytes.len(), |n| i + n + 1);
                out.push(sql[i + 1..end.saturating_sub(1).max(i + 1)].to_ascii_lowercase());
                i = end;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(bytes.len(), |n| i + n);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |n| i + 2 + n + 2);
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = bytes[i..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$'))
                    .map_or(bytes.len(), |n| i + n);
                out.push(sql[i..end].to_ascii_lowercase());
                i = end;
            }
            _ => i += sql[i..].chars().next().map_or(1, char::len_utf8),
        }
    }
    out
}

/// The placeholder names in order of first appearance.
pub fn names(pieces: &[Piece]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for p in pieces {
        if let Piece::Placeholder(n) = p
            && !names.contains(n)
        {
            names.push(n.clone());
        }
    }
    names
}

/// The statement with each placeholder replaced by `number(index)` (its 1-based place in
/// [`names`]; a name used twice binds the same parameter).
pub fn rewrite(pieces: &[Piece], mut number: impl FnMut(usize, &str) -> String) -> String {
    let order = names(pieces);
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(n) => {
                let index = order.iter().position(|o| o == n).map_or(0, |i| i + 1);
                out.push_str(&number(index, n));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholders(sql: &str) -> Vec<String> {
        names(&split(sql))
    }

    #[test]
    fn placeholders_outside_quotes_comments_and_casts() {
        assert_eq!(
            placeholders("select * from t where a = :store_id and b between :from and :to"),
            ["store_id", "from", "to"]
        );
        assert_eq!(
            placeholders(
                "select ':not', \"x:y\", a::text from t -- :no\n where b = :yes /* :nor */"
            ),
            ["yes"]
        );
        assert_eq!(
            placeholders("select 'it''s :quoted' where x = :a or y = :a"),
            ["a"]
        );
        assert_eq!(placeholders("select :1, : x, a:b"), ["b"]);
    }

    #[test]
    fn identifiers_outside_strings_and_comments() {
        assert_eq!(
            identifiers(
                "select a, \"Rm_X\", [y] from t -- z\n where b = 'api_keys' /* q */ and :p"
            ),
            [
                "select", "a", "rm_x", "y", "from", "t", "where", "b", "and", "p"
            ]
        );
    }

    #[test]
    fn rewriting_numbers_each_name_once() {
        let pieces = split("select :a, :b, :a, 'é:' || :b");
        assert_eq!(
            rewrite(&pieces, |i, _| format!("?{i}")),
            "select ?1, ?2, ?1, 'é:' || ?2"
        );
    }
}
