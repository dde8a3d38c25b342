//! The bounded template cache shared by every client of a proxy.
//!
//! Two generations instead of a strict LRU: lookups hit `hot`, or move an entry up from
//! `cold`; when `hot` reaches half the capacity it becomes `cold` and the old `cold` is
//! dropped. Shapes in use survive every rotation, the cache never holds more than `capacity`
//! entries, and a hit costs one hash lookup with no list to maintain.

use std::sync::{Arc, Mutex};

use super::template::Template;

/// Keyed by normalized text as the lexer wrote it (bytes: a lookup needs no UTF-8 check).
type Map = crate::FastMap<Arc<[u8]>, Arc<Template>>;

pub(crate) struct TemplateCache {
    gens: Mutex<Gens>,
    half: usize,
}

#[derive(Default)]
struct Gens {
    hot: Map,
    cold: Map,
}

impl TemplateCache {
    pub(crate) fn new(capacity: usize) -> Self {
        TemplateCache {
            gens: Mutex::new(Gens::default()),
            half: capacity / 2,
        }
    }

    pub(crate) fn get(&self, text: &[u8]) -> Option<Arc<Template>> {
        if self.half == 0 {
            return None;
        }
        let mut g = crate::lock(&self.gens);
        if let Some(t) = g.hot.get(text) {
            return Some(t.clone());
        }
        let (k, t) = g.cold.remove_entry(text)?;
        let dropped = self.put(&mut g, k, t.clone());
        drop(g);
        drop(dropped);
        Some(t)
    }

    pub(crate) fn insert(&self, text: Arc<[u8]>, t: Arc<Template>) {
        if self.half == 0 {
            return;
        }
        let mut g = crate::lock(&self.gens);
        let dropped = self.put(&mut g, text, t);
        drop(g);
        // A rotated-out generation is freed after the lock is released.
        drop(dropped);
    }

    fn put(&self, g: &mut Gens, text: Arc<[u8]>, t: Arc<Template>) -> Option<Map> {
        g.hot.insert(text, t);
        if g.hot.len() < self.half {
            return None;
        }
        let hot = std::mem::take(&mut g.hot);
        Some(std::mem::replace(&mut g.cold, hot))
    }

    pub(crate) fn len(&self) -> usize {
        let g = crate::lock(&self.gens);
        g.hot.len() + g.cold.len()
    }
}
