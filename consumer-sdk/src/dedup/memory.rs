use std::collections::{HashSet, VecDeque};

use super::DedupStore;
use crate::Result;

/// The most recent delivery ids seen, bounded: a duplicate re-sent by a replaying router
/// arrives close to the original, so a window of recent ids catches it in bounded memory.
#[derive(Debug)]
pub struct RecentIds {
    capacity: usize,
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Remembers `id`; returns false if it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.order.push_back(id.to_string());
        self.set.insert(id.to_string());
        true
    }
}

/// The in-memory window as a [`DedupStore`]: forgets everything on restart.
#[derive(Debug)]
pub struct MemoryStore(RecentIds);

impl MemoryStore {
    pub fn new(window: usize) -> Self {
        Self(RecentIds::new(window))
    }
}

impl DedupStore for MemoryStore {
    fn contains(&mut self, delivery_id: &str) -> Result<bool> {
        Ok(self.0.contains(delivery_id))
    }
    fn insert(&mut self, delivery_id: &str) -> Result<()> {
        self.0.insert(delivery_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_the_window_and_forgets_beyond_it() {
        let mut ids = RecentIds::new(2);
        assert!(ids.insert("a"));
        assert!(!ids.insert("a"));
        assert!(ids.insert("b"));
        assert!(ids.insert("c"));
        assert!(!ids.contains("a"));
        assert!(ids.contains("b") && ids.contains("c"));
    }
}
