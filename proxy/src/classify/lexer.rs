//! The normalizing lexer: one pass over a query string that splits it into statements, pulls
//! every literal out of each (replacing it with a placeholder parameter), collects the
//! shard-key comment and collapses whitespace and comments. The normalized text is the cache
//! key for [`super::Template`]s, so statements that differ only in their literal values (the
//! common case for ORMs and hand-written apps alike) share one parse.
//!
//! It only has to agree with Postgres on token boundaries: anything it does not recognise is
//! copied into the normalized text unchanged, which costs cache sharing, never correctness.
//! Placeholders are numbered above the highest `$n` of the statement so that they cannot be
//! mistaken for the client's own parameters.

use super::literal::{Literal, LiteralText, dollar_quote, number_end, scan_string};

/// One statement of a query string, lexed. Its normalized text is held as `Text`: the bytes
/// the lexer wrote ([`lex_bytes`]; a cache lookup then needs no UTF-8 validation, and the
/// text is made a `str` only on a miss), or a `String` (tests read that form).
#[derive(Debug)]
pub(crate) struct Lexed<'a, Text = String> {
    /// The statement as written (without its `;`), for the fallback parse.
    pub raw: &'a [u8],
    /// Literals replaced by `$base+1, $base+2, …`; comments and runs of whitespace are one space.
    /// (Everything but the statement's own bytes is ASCII; the `String` form replaces invalid
    /// UTF-8 in those.)
    pub normalized: Text,
    /// The literals in order, each with where it starts in `raw`.
    pub literals: Vec<Literal>,
    /// Placeholders are numbered from `base + 1`; `base >= max_param`.
    pub base: u32,
    /// The highest `$n` (1..=65535) the statement uses; 0 when none.
    pub max_param: u32,
    /// The value of the first `/* key_column=value */` comment.
    pub comment_key: Option<String>,
    /// Some run of tokens is long enough to parse into an expression tree deep enough to
    /// overflow a thread's stack when dropped (`a+a+a+…`): such a statement is not parsed.
    pub too_deep: bool,
}

#[cfg(test)]
impl<'a> Lexed<'a, Vec<u8>> {
    /// The same, with the normalized text as a `String` (for tests).
    pub fn into_text(self) -> Lexed<'a> {
        Lexed {
            raw: self.raw,
            normalized: String::from_utf8(self.normalized)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            literals: self.literals,
            base: self.base,
            max_param: self.max_param,
            comment_key: self.comment_key,
            too_deep: self.too_deep,
        }
    }
}

impl<Text> Lexed<'_, Text> {
    /// Where each literal starts in `raw` (byte offsets; `usize::MAX`, which matches no
    /// position, past 4 GiB).
    pub fn offsets(&self) -> Vec<usize> {
        let at = |l: &Literal| match l.offset {
            u32::MAX => usize::MAX,
            o => o as usize,
        };
        self.literals.iter().map(at).collect()
    }
}

/// The most tokens one bracket level may hold between commas before a statement counts as
/// too deep to parse. A chain of binary operators nests one level per operator (two tokens);
/// dropping ~20k levels overflows a 2 MiB stack in a debug build, so this leaves headroom.
const MAX_RUN_TOKENS: u32 = 16_000;

/// Bracket levels tracked separately; deeper ones share the last counter (overcounting).
const RUN_LEVELS: usize = 48;

/// Lexes every non-empty statement of `sql`, one at a time (no list of its own: most
/// strings hold one statement, and the caller collects what it keeps).
pub(crate) fn lex_bytes<'a, 'k>(
    sql: &'a [u8],
    key_column: &'k str,
) -> impl Iterator<Item = Lexed<'a, Vec<u8>>> + use<'a, 'k> {
    let mut start = 0;
    std::iter::from_fn(move || {
        while start < sql.len() {
            let base = prescan_params(sql, start);
            let (mut stmt, end) = StmtLexer::new(sql, start, base, key_column).run();
            if stmt.max_param > stmt.base {
                // The prescan stops at the first `;`, which may sit inside a string: redo
                // this statement with a base above every parameter it really uses.
                stmt = StmtLexer::new(sql, start, stmt.max_param, key_column)
                    .run()
                    .0;
            }
            start = end;
            if !stmt.normalized.is_empty() {
                return Some(stmt);
            }
        }
        None
    })
}

/// [`lex_bytes`] with each statement's normalized text as a `String` (for tests).
#[cfg(test)]
pub(crate) fn lex<'a, 'k>(
    sql: &'a [u8],
    key_column: &'k str,
) -> impl Iterator<Item = Lexed<'a>> + use<'a, 'k> {
    lex_bytes(sql, key_column).map(Lexed::into_text)
}

/// The highest `$n` between `start` and the next `;`: a cheap upper bound for the common case.
/// A string without any `$` (most simple queries) is settled by one search.
fn prescan_params(sql: &[u8], start: usize) -> u32 {
    let rest = &sql[start..];
    let Some(first) = memchr::memchr(b'$', rest) else {
        return 0;
    };
    let end = memchr::memchr(b';', rest).unwrap_or(rest.len());
    let mut max = 0;
    for at in memchr::memchr_iter(b'$', &rest[first.min(end)..end]) {
        let (n, _) = digits_value(&rest[first + at + 1..end]);
        if n <= MAX_PARAM {
            max = max.max(n);
        }
    }
    max
}

const MAX_PARAM: u32 = u16::MAX as u32;

/// The value of the leading ASCII digits (saturating) and how many there are.
fn digits_value(s: &[u8]) -> (u32, usize) {
    let len = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let v = s[..len].iter().fold(0u32, |acc, &b| {
        acc.saturating_mul(10).saturating_add(u32::from(b - b'0'))
    });
    (v, len)
}

pub(crate) const fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

pub(crate) fn is_ident_byte(b: u8) -> bool {
    IDENT_BYTE[b as usize]
}

/// [`is_ident_byte`] as a table: identifiers are most of every statement's bytes.
const IDENT_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
        i += 1;
    }
    t
};

/// Scans names joined by single spaces or dots (`SELECT a FROM s.t`) from `i`, where a name
/// starts: returns where they end, where the last name starts and how many tokens they are.
/// (Out of line: inside the lexer's big loop the compiler spends registers that this, the
/// hottest loop, needs.)
#[inline(never)]
fn names(sql: &[u8], mut i: usize) -> (usize, usize, u32) {
    let starts_name = |at: usize| {
        sql.get(at)
            .is_some_and(|&n| CLASS[n as usize] == Class::Word)
    };
    let (mut last, mut tokens) = (i, 1);
    loop {
        i = name_end(sql, i + 1);
        match sql.get(i) {
            Some(b' ') if starts_name(i + 1) => tokens += 1,
            Some(b'.') if starts_name(i + 1) => tokens += 2,
            _ => return (i, last, tokens),
        }
        i += 1;
        last = i;
    }
}

/// Where the identifier bytes from `from` end: four at a time, then one by one.
fn name_end(sql: &[u8], from: usize) -> usize {
    let rest = &sql[from..];
    let mut quads = rest.chunks_exact(4);
    let mut n = 0;
    for quad in &mut quads {
        if let Some(k) = quad.iter().position(|&b| !IDENT_BYTE[b as usize]) {
            return from + n + k;
        }
        n += 4;
    }
    let tail = quads.remainder();
    from + n + tail.iter().take_while(|&&b| IDENT_BYTE[b as usize]).count()
}

/// What a byte can start, for the main loop's one table look per token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// A name (letters, `_`, and every byte of a non-ASCII character).
    Word,
    /// An operator or punctuation byte with no meaning of its own to the lexer.
    Plain,
    Space,
    Digit,
    /// `'`
    Quote,
    /// `"`
    Name,
    Dollar,
    Semicolon,
    /// `-`: a comment when doubled.
    Dash,
    /// `/`: a comment before `*`.
    Slash,
    /// `.`: may start a number (`.5`).
    Dot,
    /// `(` or `[`
    Open,
    /// `)` or `]`
    Close,
    Comma,
}

const CLASS: [Class; 256] = {
    let mut t = [Class::Plain; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = match b {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => Class::Space,
            b'0'..=b'9' => Class::Digit,
            b'\'' => Class::Quote,
            b'"' => Class::Name,
            b'$' => Class::Dollar,
            b';' => Class::Semicolon,
            b'-' => Class::Dash,
            b'/' => Class::Slash,
            b'.' => Class::Dot,
            b'(' | b'[' => Class::Open,
            b')' | b']' => Class::Close,
            b',' => Class::Comma,
            _ if is_ident_start(b) => Class::Word,
            _ => Class::Plain,
        };
        i += 1;
    }
    t
};

/// After this byte a `.` is a qualifier (`t.5`, `"t".c`, `f(x).a`), not the start of `.5`.
fn ends_name(b: u8) -> bool {
    is_ident_byte(b) || matches!(b, b'"' | b')' | b']')
}

struct StmtLexer<'a, 'k> {
    sql: &'a [u8],
    start: usize,
    pos: usize,
    key_column: &'k str,
    out: Vec<u8>,
    lexed: Lexed<'a, Vec<u8>>,
    /// Whitespace or a comment was skipped since the last token.
    space: bool,
    /// Tokens since the last comma, per bracket level (see `MAX_RUN_TOKENS`).
    runs: [u32; RUN_LEVELS],
    level: usize,
}

impl<'a, 'k> StmtLexer<'a, 'k> {
    #[inline] // (out of line, the large struct it builds is copied on return)
    fn new(sql: &'a [u8], start: usize, base: u32, key_column: &'k str) -> Self {
        StmtLexer {
            sql,
            start,
            pos: start,
            key_column,
            out: Vec::with_capacity((sql.len() - start).min(1024) + 8),
            lexed: Lexed {
                raw: &[],
                normalized: Vec::new(),
                literals: Vec::new(),
                base,
                max_param: 0,
                comment_key: None,
                too_deep: false,
            },
            space: false,
            runs: [0; RUN_LEVELS],
            level: 0,
        }
    }

    /// Lexes up to the statement's `;` (or the end); returns it and where the next one starts.
    /// Names, operators and punctuation go to [`Self::stretch`]; everything else that needs
    /// a look of its own (whitespace, comments, literals, parameters) is settled here.
    fn run(mut self) -> (Lexed<'a, Vec<u8>>, usize) {
        let sql = self.sql;
        let mut end = sql.len();
        while let Some(&b) = sql.get(self.pos) {
            let next = sql.get(self.pos + 1).copied();
            match CLASS[b as usize] {
                Class::Semicolon => {
                    end = self.pos;
                    self.pos += 1;
                    break;
                }
                Class::Space => {
                    self.space = true;
                    self.pos += 1;
                    while sql
                        .get(self.pos)
                        .is_some_and(|&b| CLASS[b as usize] == Class::Space)
                    {
                        self.pos += 1;
                    }
                }
                Class::Dash if next == Some(b'-') => self.line_comment(),
                Class::Slash if next == Some(b'*') => self.block_comment(),
                Class::Quote if self.pos == self.start || sql[self.pos - 1] != b'&' => {
                    self.string_literal(self.pos + 1, false)
                }
                Class::Dollar => self.dollar(),
                Class::Digit => self.number(),
                Class::Dot
                    if next.is_some_and(|n| n.is_ascii_digit()) && self.dot_starts_number() =>
                {
                    self.number()
                }
                _ => self.stretch(),
            }
        }
        let mut lexed = self.lexed;
        lexed.raw = &sql[self.start..end];
        lexed.normalized = self.out;
        (lexed, self.pos)
    }

    /// Copies the longest stretch of tokens that the normalized text keeps as written
    /// (names, quoted names, prefixed strings such as `B'01'` and `U&'…'`, operators,
    /// brackets, commas, and single spaces between them) in one go, counting its tokens for
    /// `too_deep`. It stops before other whitespace, a comment, a literal, a parameter or a
    /// `;` (after the one space before a literal or a parameter): inside a stretch, a digit
    /// or a `$` that does not continue a name starts a token of its own.
    fn stretch(&mut self) {
        let sql = self.sql;
        let start = self.pos;
        let mut i = start;
        let mut tokens = 0;
        let mut e_string = false;
        while let Some(&b) = sql.get(i) {
            match CLASS[b as usize] {
                Class::Word => {
                    let (end, last, n) = names(sql, i);
                    (i, tokens) = (end, tokens + n);
                    if sql.get(i) == Some(&b'\'') {
                        if i == last + 1 && matches!(sql[last], b'e' | b'E') {
                            // `E'…'`: a literal, which the stretch stops before.
                            (i, tokens, e_string) = (last, tokens - 1, true);
                            break;
                        }
                        // B'…', X'…', N'…' and other prefixed strings stay in the text.
                        i = quoted_end(sql, i);
                    }
                }
                Class::Plain => {
                    i += 1;
                    tokens += 1;
                }
                Class::Dash | Class::Slash => {
                    let comment = if b == b'-' { b'-' } else { b'*' };
                    if sql.get(i + 1) == Some(&comment) {
                        break;
                    }
                    i += 1;
                    tokens += 1;
                }
                Class::Dot => {
                    // (At the start, `run` has already found that this is not a number.)
                    if i > start
                        && sql.get(i + 1).is_some_and(|n| n.is_ascii_digit())
                        && !ends_name(sql[i - 1])
                    {
                        break;
                    }
                    i += 1;
                    tokens += 1;
                }
                Class::Name => {
                    i = quoted_end(sql, i);
                    tokens += 1;
                }
                // A string with a prefix that changes its meaning (`U&'…'`): kept as is.
                Class::Quote if i > self.start && sql[i - 1] == b'&' => {
                    i = quoted_end(sql, i);
                    tokens += 1;
                }
                Class::Open | Class::Close | Class::Comma => {
                    self.count(tokens + 1);
                    tokens = 0;
                    self.bracket(b);
                    i += 1;
                }
                // One space before the next token is what the normalized text has there too
                // (also before a literal or a parameter, where the stretch then ends). Before
                // more whitespace, a comment, a `;` or the end, the stretch ends before it.
                Class::Space
                    if b == b' '
                        && sql.get(i + 1).is_some_and(|&n| {
                            !matches!(
                                CLASS[n as usize],
                                Class::Space | Class::Semicolon | Class::Dash | Class::Slash
                            )
                        }) =>
                {
                    i += 1;
                }
                _ => break,
            }
        }
        debug_assert!(i > start || e_string, "a stretch always moves on");
        if i > start {
            self.count(tokens);
            self.emit(&sql[start..i]);
            self.pos = i;
        }
        if e_string {
            self.string_literal(i + 2, true);
        }
    }

    /// Appends to the normalized text, after one space if whitespace or a comment came before.
    fn emit(&mut self, bytes: &[u8]) {
        if self.space && !self.out.is_empty() {
            self.out.push(b' ');
        }
        self.space = false;
        self.out.extend_from_slice(bytes);
    }

    /// One token that is not part of a stretch.
    fn token(&mut self, bytes: &[u8]) {
        self.emit(bytes);
        self.count(1);
    }

    /// Adds `tokens` to the current bracket level's run (see `MAX_RUN_TOKENS`).
    fn count(&mut self, tokens: u32) {
        let run = &mut self.runs[self.level];
        *run += tokens;
        if *run > MAX_RUN_TOKENS {
            self.lexed.too_deep = true;
        }
    }

    /// Tracks bracket levels and comma-separated items for `too_deep`.
    fn bracket(&mut self, b: u8) {
        match b {
            b'(' | b'[' => {
                self.level = (self.level + 1).min(RUN_LEVELS - 1);
                self.runs[self.level] = 0;
            }
            b')' | b']' => self.level = self.level.saturating_sub(1),
            b',' => self.runs[self.level] = 0,
            _ => {}
        }
    }

    /// `$n` (a placeholder or the client's own parameter) as one token.
    fn param(&mut self, n: u32) {
        if n < 10 {
            // (A fixed-size copy: cheaper than one of a length known only at run time.)
            return self.token(&[b'$', b'0' + n as u8]);
        }
        let mut buf = [0u8; 11];
        self.token(dollar_number(n, &mut buf));
    }

    fn push_literal(&mut self, at: usize, text: LiteralText, quoted: bool) {
        let n = self.lexed.base + 1 + self.lexed.literals.len() as u32;
        self.param(n);
        let offset = u32::try_from(at - self.start).unwrap_or(u32::MAX);
        if self.lexed.literals.capacity() == 0 {
            // Room for about one literal per 32 bytes of the string (at least the 4 of a
            // Vec's first growth): enough for most statements, so that the list is allocated
            // once (a reallocation costs more than the allocation itself).
            let len = self.sql.len() - self.start;
            self.lexed.literals = Vec::with_capacity((len / 32).clamp(4, 64));
        }
        self.lexed.literals.push(Literal {
            text,
            quoted,
            offset,
        });
    }

    /// A `.` starts a number (`.5`) unless it follows a name or a closing bracket (`t.5`).
    fn dot_starts_number(&self) -> bool {
        self.space || self.out.last().is_none_or(|&b| !ends_name(b))
    }

    fn line_comment(&mut self) {
        let rest = &self.sql[self.pos..];
        self.pos += memchr::memchr(b'\n', rest).map_or(rest.len(), |p| p + 1);
        self.space = true;
    }

    fn block_comment(&mut self) {
        let end = block_comment_end(self.sql, self.pos);
        if self.lexed.comment_key.is_none() {
            let inner_end = if end >= self.pos + 4 && self.sql[end - 2..end] == *b"*/" {
                end - 2
            } else {
                end
            };
            self.lexed.comment_key =
                comment_key(&self.sql[self.pos + 2..inner_end], self.key_column);
        }
        self.pos = end;
        self.space = true;
    }

    /// A `'…'` (or `E'…'` when `escapes`) constant whose body starts at `body`.
    fn string_literal(&mut self, body: usize, escapes: bool) {
        let at = if escapes { body - 2 } else { body - 1 };
        match scan_string(self.sql, body, escapes) {
            Some((text, end)) => {
                self.push_literal(at, text, true);
                self.pos = end;
            }
            None => {
                // Unterminated: Postgres will refuse it; keep the text as written.
                self.token(&self.sql[at..]);
                self.pos = self.sql.len();
            }
        }
    }

    fn dollar(&mut self) {
        let sql = self.sql;
        let (n, len) = digits_value(&sql[self.pos + 1..]);
        if len > 0 {
            // A parameter. Out-of-range numbers (which Postgres refuses) become `$0` so that
            // they can never collide with a placeholder.
            let n = if (1..=MAX_PARAM).contains(&n) { n } else { 0 };
            self.lexed.max_param = self.lexed.max_param.max(n);
            self.param(n);
            self.pos += 1 + len;
            return;
        }
        match dollar_quote(sql, self.pos) {
            Some((body, end)) => {
                let text = LiteralText::from_bytes(&sql[body.0..body.1]);
                self.push_literal(self.pos, text, true);
                self.pos = end;
            }
            None => {
                self.token(b"$");
                self.pos += 1;
            }
        }
    }

    fn number(&mut self) {
        let sql = self.sql;
        let start = self.pos;
        let end = number_end(sql, start);
        if sql.get(end).is_some_and(|&b| is_ident_byte(b)) {
            // `1abc`: not a plain number; keep it (and the name) as written.
            let stop = end + sql[end..].iter().take_while(|&&b| is_ident_byte(b)).count();
            self.token(&sql[start..stop]);
            self.pos = stop;
            return;
        }
        self.push_literal(start, LiteralText::from_ascii(&sql[start..end]), false);
        self.pos = end;
    }
}

/// `$n` in `buf`.
fn dollar_number(mut n: u32, buf: &mut [u8; 11]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            buf[i - 1] = b'$';
            return &buf[i - 1..];
        }
    }
}

/// The end (exclusive) of a `"…"` or `'…'` token at `at` with doubled-quote escapes.
pub(crate) fn quoted_end(sql: &[u8], at: usize) -> usize {
    let q = sql[at];
    let mut i = at + 1;
    while i < sql.len() {
        if sql[i] == q {
            if sql.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    sql.len()
}

/// The end of a (nested) block comment starting at `at`.
pub(crate) fn block_comment_end(sql: &[u8], at: usize) -> usize {
    let mut depth = 0usize;
    let mut i = at;
    while i + 1 < sql.len() {
        match (sql[i], sql[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    sql.len()
}

/// Reads `key=42`, `key = 'abc'` or sqlcommenter's `a='x',key='42'` from a comment's text.
pub(crate) fn comment_key(inner: &[u8], key_column: &str) -> Option<String> {
    memchr::memchr(b'=', inner)?;
    let text = std::str::from_utf8(inner).ok()?;
    for part in text.split(',') {
        let Some((name, value)) = part.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case(key_column) {
            continue;
        }
        let value = value.trim();
        let value = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            Some(inner) => inner.replace("''", "'"),
            None => value.split_whitespace().next()?.to_owned(),
        };
        return (!value.is_empty()).then_some(value);
    }
    None
}

#[cfg(test)]
#[path = "lexer_tests.rs"]
mod tests;
