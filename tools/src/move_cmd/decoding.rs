//! Parsing the text that Postgres's `test_decoding` output plugin writes for each row
//! change, so the move's verification can tell which of the tenant's rows changed on the
//! source since it compared the two copies (see [`super::verify`]).
//!
//! A change line looks like
//! `table public.orders: UPDATE: old-key: id[bigint]:7 new-tuple: id[bigint]:8 note[text]:'x'`:
//! the relation as a quoted, qualified identifier, the action, then one or two tuples of
//! `name[type]:value`. Values of the numeric types are bare, booleans are `true`/`false`,
//! bit strings `B'…'`, everything else a single-quoted literal with `''` for a quote; a
//! column may also read `null` or `unchanged-toast-datum`.

/// One decoded line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A row change: an insert's new tuple, an update's old key (when the key changed or
    /// the table has REPLICA IDENTITY FULL) and new tuple, a delete's old key. No tuple
    /// at all when the server sent none (`(no-tuple-data)`).
    Change {
        schema: String,
        table: String,
        tuples: Vec<Vec<(String, Value)>>,
    },
    /// A TRUNCATE of one or more tables.
    Truncate,
    /// BEGIN, COMMIT, a logical message: nothing about rows.
    Other,
}

/// A column's value as the plugin printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value the update did not change, which the plugin does not print.
    UnchangedToast,
    /// The value's text form, unquoted.
    Text(String),
}

/// Parses one line of `test_decoding` output; `Err` names what did not parse.
pub fn parse(line: &str) -> Result<Line, String> {
    let Some(rest) = line.strip_prefix("table ") else {
        return Ok(Line::Other);
    };
    if line.contains(": TRUNCATE:") {
        return Ok(Line::Truncate);
    }
    let mut p = Parser { s: rest, line };
    let first = p.ident()?;
    let (schema, table) = match p.eat(".") {
        true => (first, p.ident()?),
        false => (String::new(), first),
    };
    p.expect(": ")?;
    let action = p.word();
    p.expect(":")?;
    if !matches!(action, "INSERT" | "UPDATE" | "DELETE") {
        return Err(format!("unknown action {action:?} in {line:?}"));
    }
    let mut tuples = Vec::new();
    let mut tuple = Vec::new();
    while p.eat(" ") {
        if p.eat("(no-tuple-data)") {
            continue;
        }
        if p.eat("old-key:") {
            continue;
        }
        if p.eat("new-tuple:") {
            tuples.push(std::mem::take(&mut tuple));
            continue;
        }
        let name = p.ident()?;
        p.expect("[")?;
        p.type_name()?;
        let value = p.value()?;
        tuple.push((name, value));
    }
    if !p.s.is_empty() {
        return Err(format!("trailing text {:?} in {line:?}", p.s));
    }
    if !tuple.is_empty() {
        tuples.push(tuple);
    }
    Ok(Line::Change {
        schema,
        table,
        tuples,
    })
}

struct Parser<'a> {
    s: &'a str,
    line: &'a str,
}

impl<'a> Parser<'a> {
    fn eat(&mut self, tok: &str) -> bool {
        match self.s.strip_prefix(tok) {
            Some(rest) => {
                self.s = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, tok: &str) -> Result<(), String> {
        match self.eat(tok) {
            true => Ok(()),
            false => Err(format!(
                "expected {tok:?} at {:?} in {:?}",
                self.s, self.line
            )),
        }
    }

    /// Letters up to the next `:`.
    fn word(&mut self) -> &'a str {
        let end = self.s.find(':').unwrap_or(self.s.len());
        let (w, rest) = self.s.split_at(end);
        self.s = rest;
        w
    }

    /// An identifier as `quote_identifier` prints it: bare, or in double quotes with `""`
    /// for a quote.
    fn ident(&mut self) -> Result<String, String> {
        if self.eat("\"") {
            return self.quoted('"');
        }
        let end = self
            .s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(self.s.len());
        if end == 0 {
            return Err(format!(
                "expected a name at {:?} in {:?}",
                self.s, self.line
            ));
        }
        let (id, rest) = self.s.split_at(end);
        self.s = rest;
        Ok(id.to_owned())
    }

    /// The rest of a literal opened by `q`, with a doubled `q` standing for one.
    fn quoted(&mut self, q: char) -> Result<String, String> {
        let mut out = String::new();
        let mut chars = self.s.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != q {
                out.push(c);
                continue;
            }
            if self.s[i + 1..].starts_with(q) {
                out.push(q);
                chars.next();
                continue;
            }
            self.s = &self.s[i + 1..];
            return Ok(out);
        }
        Err(format!("unterminated quote in {:?}", self.line))
    }

    /// The type between `[` and `]:` (it may hold brackets itself: `integer[]`).
    fn type_name(&mut self) -> Result<(), String> {
        match self.s.find("]:") {
            Some(end) => {
                self.s = &self.s[end + 2..];
                Ok(())
            }
            None => Err(format!("unterminated type in {:?}", self.line)),
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        if self.eat("'") {
            return self.quoted('\'').map(Value::Text);
        }
        if self.eat("B'") {
            return self.quoted('\'').map(Value::Text);
        }
        let end = self.s.find(' ').unwrap_or(self.s.len());
        let (v, rest) = self.s.split_at(end);
        self.s = rest;
        Ok(match v {
            "null" => Value::Null,
            "unchanged-toast-datum" => Value::UnchangedToast,
            "" => return Err(format!("empty value in {:?}", self.line)),
            v => Value::Text(v.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &str) -> Value {
        Value::Text(v.into())
    }

    fn change(line: &str) -> (String, String, Vec<Vec<(String, Value)>>) {
        match parse(line).unwrap() {
            Line::Change {
                schema,
                table,
                tuples,
            } => (schema, table, tuples),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_insert_gives_its_new_tuple() {
        let (schema, table, tuples) = change(
            "table public.orders: INSERT: tenant_id[bigint]:42 id[bigint]:-7 \
             note[text]:'it''s a: b' n[integer]:null ok[boolean]:true",
        );
        assert_eq!((schema.as_str(), table.as_str()), ("public", "orders"));
        assert_eq!(
            tuples,
            vec![vec![
                ("tenant_id".into(), text("42")),
                ("id".into(), text("-7")),
                ("note".into(), text("it's a: b")),
                ("n".into(), Value::Null),
                ("ok".into(), text("true")),
            ]]
        );
    }

    #[test]
    fn an_update_with_a_changed_key_gives_old_key_and_new_tuple() {
        let (_, _, tuples) = change(
            "table public.orders: UPDATE: old-key: tenant_id[bigint]:1 id[bigint]:7 \
             new-tuple: tenant_id[bigint]:1 id[bigint]:8 body[text]:unchanged-toast-datum",
        );
        assert_eq!(tuples.len(), 2);
        assert_eq!(tuples[0][1], ("id".into(), text("7")));
        assert_eq!(tuples[1][1], ("id".into(), text("8")));
        assert_eq!(tuples[1][2].1, Value::UnchangedToast);
    }

    #[test]
    fn a_delete_gives_its_old_key() {
        let (_, _, tuples) =
            change("table public.orders: DELETE: tenant_id[bigint]:1 id[bigint]:7");
        assert_eq!(tuples.len(), 1);
        let (_, _, none) = change("table public.t: DELETE: (no-tuple-data)");
        assert!(none.is_empty());
    }

    #[test]
    fn quoted_names_and_odd_types_parse() {
        let (schema, table, tuples) = change(
            "table \"My Schema\".\"odd\"\"table\": INSERT: \"Key\"[character varying]:'a b' \
             tags[integer[]]:'{1,2}' flags[bit]:B'101' at[timestamp with time zone]:'2026-01-01 00:00:00+00'",
        );
        assert_eq!(schema, "My Schema");
        assert_eq!(table, "odd\"table");
        assert_eq!(tuples[0][0], ("Key".into(), text("a b")));
        assert_eq!(tuples[0][1], ("tags".into(), text("{1,2}")));
        assert_eq!(tuples[0][2], ("flags".into(), text("101")));
        assert_eq!(tuples[0][3].1, text("2026-01-01 00:00:00+00"));
    }

    #[test]
    fn other_lines_and_truncates_are_told_apart() {
        assert_eq!(parse("BEGIN").unwrap(), Line::Other);
        assert_eq!(parse("COMMIT").unwrap(), Line::Other);
        assert_eq!(
            parse("table public.a, public.b: TRUNCATE: (no-flags)").unwrap(),
            Line::Truncate
        );
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for bad in [
            "table public.orders: INSERT: id[bigint",
            "table public.orders: INSERT: note[text]:'open",
            "table public.orders: SMASH: id[bigint]:1",
            "table : INSERT:",
            "table public.orders INSERT",
            "table public.orders: INSERT: id[bigint]:",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
