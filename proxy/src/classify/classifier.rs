//! The classifier: lexes a query string, looks each statement's shape up in the template
//! cache (parsing it on a miss), and hands back the templates with this call's literals.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use smallvec::SmallVec;

use super::cache::TemplateCache;
use super::lexer;
use super::literal::Literal;
use super::template::{self, Template};

/// The shard key's SQL type: the catalog's own, so the proxy, the catalog and `shardctl`
/// agree on how keys are spelled.
pub use shardgate_catalog::KeyType;

#[derive(Debug, Clone)]
pub struct ClassifyConfig {
    /// The shard-key column, as Postgres names it (unquoted identifiers in statements match it
    /// case-insensitively, quoted ones exactly). Also the name read from key comments.
    pub key_column: String,
    pub key_type: KeyType,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        ClassifyConfig {
            key_column: "tenant_id".into(),
            key_type: KeyType::Bigint,
        }
    }
}

/// Shared by all clients of a proxy (`Arc<Classifier>`); `classify` takes `&self`.
pub struct Classifier {
    cfg: ClassifyConfig,
    cache: TemplateCache,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The statements of one query string, in order (empty statements are left out).
#[derive(Debug)]
pub struct Classified {
    /// Derefs to a slice; one statement (the usual case) is kept inline, without allocating.
    pub statements: SmallVec<[StatementInfo; 1]>,
}

/// One statement: its shared template and this occurrence's values.
#[derive(Debug, Clone)]
pub struct StatementInfo {
    pub template: Arc<Template>,
    /// This statement's literal values, in the order of the template's placeholders.
    pub literals: Vec<Literal>,
    /// The value of a `/* key_column=… */` comment: the highest-precedence key source.
    pub comment_key: Option<String>,
}

impl Classifier {
    /// `capacity`: the most templates kept (0 disables the cache).
    pub fn new(cfg: ClassifyConfig, capacity: usize) -> Self {
        Classifier {
            cfg,
            cache: TemplateCache::new(capacity),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &ClassifyConfig {
        &self.cfg
    }

    /// Classifies a simple-query string (possibly several statements) or one Parse text.
    /// Never fails: what cannot be understood comes back as `Unparsed` with no key.
    pub fn classify(&self, sql: &[u8]) -> Classified {
        let statements = lexer::lex_bytes(sql, &self.cfg.key_column)
            .map(|l| {
                let template = self.template_for(&l);
                StatementInfo {
                    template,
                    literals: l.literals,
                    comment_key: l.comment_key,
                }
            })
            .collect();
        Classified { statements }
    }

    fn template_for(&self, l: &lexer::Lexed<'_, Vec<u8>>) -> Arc<Template> {
        if let Some(t) = self.cache.get(&l.normalized) {
            // The same text can only mean another numbering if its parameters differ.
            if t.placeholder_base == l.base {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return t;
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&l.normalized);
        // The cache is keyed by the bytes the lexer wrote: the text's own, unless invalid
        // UTF-8 had to be replaced in it.
        let replaced = matches!(text, Cow::Owned(_));
        let text: Arc<str> = Arc::from(text);
        let key: Arc<[u8]> = if replaced {
            Arc::from(l.normalized.as_slice())
        } else {
            Arc::from(text.clone())
        };
        let t = Arc::new(template::build(l, text, &self.cfg.key_column));
        self.cache.insert(key, t.clone());
        t
    }

    /// Template cache (hits, misses) since start.
    pub fn cache_stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Templates held now.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
#[path = "classifier_tests.rs"]
mod tests;
