//! Pure statement classification: what a statement is and which tenant it is for. Nothing in
//! this module performs I/O or imports `frontend`, `backend` or `exec`.
//!
//! Two parts:
//! - [`session`]: the statements that change session state (`SET`, `RESET`, `DISCARD`,
//!   `DEALLOCATE`, savepoints), which transaction pooling carries between server connections.
//! - shard-key extraction (DESIGN.md §3), cached by statement shape:
//!
//! ```text
//! Classifier::new(ClassifyConfig { key_column, key_type }, capacity)
//!   .classify(sql: &[u8]) -> Classified { statements: SmallVec<[StatementInfo; 1]> }
//! StatementInfo { template: Arc<Template>, literals: Vec<Literal>, comment_key: Option<String> }
//! Literal { text: LiteralText /* derefs to str; inline up to 38 bytes */, quoted: bool }
//! Template { text, kind: StatementKind, tables: Vec<TableRef>, key: KeySpec,
//!            has_key_column_write, key_write: KeySpec, param_count, explain, parsed }
//! KeySpec::{None, One(ValueRef), AnyOf(Vec<ValueRef>), AnyOfArray(ValueRef), Rows(Vec<ValueRef>)}
//! ValueRef::{Literal(index into StatementInfo.literals), Param($n)}
//! resolve(&KeySpec, &StatementInfo, Option<&BindParams>, KeyType) -> Result<KeyValues, KeyError>
//! StatementInfo::keys(params, key_type)   // comment key first, then template.key
//! BindParams::parse(bind_after_names, parse_param_types)
//! KeyValues::{None, Keys(Vec<TenantKey>) /* dedup, ordered */, PerRow(Vec<TenantKey>)}
//! ```
//!
//! How it works: a hand-written lexer ([`lexer`]) splits the string into statements and
//! replaces every literal with a placeholder `$n` numbered above the statement's own
//! parameters; the resulting normalized text is the cache key. On a miss, `sqlparser` parses
//! the normalized text (or, when a literal cannot be a placeholder, as in `varchar(10)`,
//! the original text, whose literals are then found by position) and
//! [`keys`] walks the AST for the key (see its doc for the rules that keep it safe: when in
//! doubt, no key, never a wrong one). Statements the parser refuses get a kind from their
//! first word and no key. The cache ([`cache`]) is bounded and shared; a hit costs one lex
//! pass and one hash lookup.
//!
//! Not extracted (the statement gets `KeySpec::None`): negative key literals (`= -5`),
//! `(key, x) IN ((…), …)` row comparisons, an array pin ANDed with another pin, INSERTs
//! without a column list or from a SELECT that does not project the key or a literal, keys
//! of COPY rows (the exec layer reads those from the data), MERGE.
//!
//! Benchmark: `CARGO_TARGET_DIR=… cargo bench -p shardgate --bench classify`
//! (proxy/benches/classify.rs; prints p50/p99 for cached and uncached statements).

mod bind;
mod cache;
mod classifier;
mod keys;
mod lexer;
mod literal;
mod resolve;
mod rewrite;
mod session;
mod template;

pub use bind::BindParams;
pub use classifier::{Classified, Classifier, ClassifyConfig, KeyType, StatementInfo};
pub use literal::{Literal, LiteralText};
pub use resolve::{KeyError, KeyValues, resolve};
pub use rewrite::insert_with_rows;
pub use session::{SessionCommand, SessionScan, scan_session_commands, split_statements};
pub use template::{KeySpec, StatementKind, TableRef, Template, ValueRef};
